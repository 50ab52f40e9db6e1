package tunnel

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/yamux"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(tb testing.TB) (net.Conn, net.Conn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := ln.Accept(); ch <- res{c, err} }()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		tb.Fatal(r.err)
	}
	tb.Cleanup(func() { _ = a.Close(); _ = r.c.Close() })
	return a, r.c
}

// muxPair is a yamux client and server over loopback TCP, the server echoing every stream, as the relay (client)
// and agent (server) run it on the raw transport.
func muxPair(tb testing.TB, opts Options) *yamux.Session {
	tb.Helper()
	a, c := tcpPair(tb)
	cfg := opts.YamuxConfig()
	srv, err := yamux.Server(Coalesce(c), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	cli, err := yamux.Client(Coalesce(a), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			st, err := srv.AcceptStream()
			if err != nil {
				return
			}
			wg.Go(func() {
				buf := make([]byte, 32<<10)
				_, _ = io.CopyBuffer(st, st, buf)
				_ = st.Close()
			})
		}
	})
	tb.Cleanup(func() {
		_ = cli.Close()
		_ = srv.Close()
		wg.Wait()
	})
	return cli
}

// BenchmarkMuxRoundTrip is one small exchange (a 256-byte message and its echo) on a pooled stream: the mux's
// per-frame cost on the latency path, two frames each way through each side's send goroutine. "tcp" is the same
// echo on a bare loopback TCP connection (the floor), "yamux" through the session the relay and agent run.
func BenchmarkMuxRoundTrip(b *testing.B) {
	msg := make([]byte, 256)
	got := make([]byte, 256)
	b.Run("tcp", func(b *testing.B) {
		a, c := tcpPair(b)
		go func() { _, _ = io.Copy(c, c) }()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := a.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(a, got); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("yamux", func(b *testing.B) {
		st, err := muxPair(b, Options{}).OpenStream()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := st.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(st, got); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkMuxSmallFrames is many streams writing small frames at once (64 streams, 512 bytes per write, echoed
// and read back): how many frames per second one session carries when every write is its own frame and syscall.
func BenchmarkMuxSmallFrames(b *testing.B) {
	for _, tc := range []struct {
		name   string
		window uint32
	}{{"window=256KiB", 256 << 10}, {"window=4MiB", 4 << 20}} {
		b.Run(tc.name, func(b *testing.B) {
			sess := muxPair(b, Options{StreamWindow: tc.window})
			const streams = 64
			sts := make([]net.Conn, streams)
			for i := range sts {
				st, err := sess.OpenStream()
				if err != nil {
					b.Fatal(err)
				}
				sts[i] = st
			}
			msg := make([]byte, 512)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			var next atomic.Int64
			b.SetParallelism(32) // 64 writers on 2 cores
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				st := sts[next.Add(1)%streams]
				got := make([]byte, len(msg))
				for pb.Next() {
					if _, err := st.Write(msg); err != nil {
						return
					}
					if _, err := io.ReadFull(st, got); err != nil {
						return
					}
				}
			})
		})
	}
}

// BenchmarkMuxBulk is one stream carrying bulk data (256 KiB writes, the agent's copy buffer) to the echo server,
// which sends it back while another goroutine reads it: both directions busy, frames as large as the window allows,
// so it is what the send path costs per byte (SetBytes counts one direction).
func BenchmarkMuxBulk(b *testing.B) {
	sess := muxPair(b, Options{})
	st, err := sess.OpenStream()
	if err != nil {
		b.Fatal(err)
	}
	msg := make([]byte, 256<<10)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 256<<10)
		for {
			if _, err := st.Read(buf); err != nil {
				return
			}
		}
	})
	for b.Loop() {
		if _, err := st.Write(msg); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	_ = st.Close()
	_ = sess.Close()
	wg.Wait()
}
