// Package webhook delivers the relay's presence events (package presence) to HTTP receivers: signed, at least
// once, in log order per receiver, across relay restarts and replica failures.
//
// Delivery. A Sender reads the presence Log from a cursor kept per URL in a Store and POSTs each event, one per
// request, as the JSON of presence.Event, with a Switchboard-Signature header (see the public package webhook: Sign and Verify) and
// the event's log ID in Switchboard-Event-Id. The cursor advances only after a 2xx, so an event is re-sent until
// the receiver takes it: network errors, timeouts (Config.Timeout per attempt), 5xx, 408 and 429 are retried for
// ever with capped exponential backoff and jitter, honouring Retry-After on 429 and 503. A 3xx or any other 4xx is
// retried too (a receiver being redeployed or reconfigured answers 404 or 401 for a while), but after
// Config.MaxRejections such answers to one event the event is dropped for that URL, counted and logged at error
// level, so one poisoned event cannot block a receiver for ever. Redirects are never followed: a signed event goes
// only to the configured URL. Each URL has its own cursor and loop; a failing receiver delays no other.
//
// Leadership. In a cluster every replica runs a Sender on a shared Redis Store; the one holding the lease (a Redis
// key taken with a single script, renewed every Lease/3, deleted by compare-and-delete on a clean stop) delivers,
// the others poll for it. Cursor writes are fenced by the lease, so a sender that lost it cannot move a cursor the
// new leader owns. The new leader resumes from the stored cursors, so events in flight at the takeover may be
// delivered twice: receivers drop duplicates by Switchboard-Event-Id.
//
// Gaps. If a cursor points before the oldest event the log retains (presence.ErrGap: the receiver was failing for
// longer than the retention, or Redis lost the log), the sender logs a warning, counts
// switchboard_webhook_gaps_total and continues from the oldest retained event.
package webhook
