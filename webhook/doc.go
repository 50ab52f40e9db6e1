// Package webhook is for receivers of a Switchboard relay's webhooks: the relay POSTs every presence event (a host
// came online, went offline, moved, changed its metadata) as JSON to each --webhook-url, signed with the shared
// --webhook-secret in the Switchboard-Signature header. Verify checks that signature; Event is the body.
//
// Delivery is at least once, in log order per receiver: answer 2xx once the event is stored, and drop duplicates by
// the Switchboard-Event-Id header (or Event.ID). Any other answer is retried.
//
//	func receive(w http.ResponseWriter, r *http.Request) {
//		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
//		if err := webhook.Verify(secret, r.Header.Get(webhook.SignatureHeader), body, 5*time.Minute); err != nil {
//			http.Error(w, "bad signature", http.StatusUnauthorized)
//			return
//		}
//		var e webhook.Event
//		_ = json.Unmarshal(body, &e)
//		// e.Type, e.HostID, e.Seq ...
//	}
//
// The relay side (the sender) lives in the relay; docs/webhooks.md in the repository describes delivery in full.
package webhook
