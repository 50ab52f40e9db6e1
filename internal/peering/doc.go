// Package peering is the protocol between the replicas of a relay cluster (docs/scaling.md):
//
//   - the signed hop that authenticates every request one replica sends another (Signer: HMAC under the cluster
//     secret, bound to the method, URI, Host, subject and forwarding headers, and accepted once within HopMaxAge);
//   - the requests a replica makes of its own (Client): eviction notices (EvictPath) and the question whether a
//     peer holds a host's tunnel (HasPath);
//   - the eviction notices a replica received, remembered for tunnels that had not registered yet (Evictions);
//   - the other replicas as this one knows them (Peers): their internal URLs, the list kept from the directory's
//     listings for when the directory is down, and the asking of them which holds a host (cached and
//     single-flighted per host, bounded in rounds and answers);
//   - the internal listener's handler (Handler): it verifies every hop, answers notices and questions, and hands
//     forwarded client exchanges and other endpoints to the replica through a small interface (Local);
//   - the client of the lean forward (LeanClient): bodiless requests that may be sent twice, carried on pooled
//     keep-alive connections on the caller's goroutine, their response heads read within a byte allowance, and
//     sent again, signed again, when a pooled connection turns out to have been closed by the peer.
//
// It owns the wire: header names, endpoint paths, signatures and their verification. The relay (package relay)
// decides what to send and serves what arrives: it keeps the tunnel registry, local proxying and the drain.
//
// Locks. Every mutex in the package is a leaf, held for a few map operations and never across I/O, a callback or
// another lock: the nonce cache's (nonces.mu), Evictions.mu, the URL cache's (urlCache.mu), the ask cache's
// (peerAsker.mu) and the lean forward's pool (LeanClient.mu). Peers' list is replaced whole (an atomic pointer),
// never locked.
package peering
