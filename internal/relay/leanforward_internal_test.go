package relay

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"reflect"
	"testing"
)

// captureTransport records the outbound request a ReverseProxy sends, and sends nothing.
type captureTransport struct{ out *http.Request }

func (c *captureTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.out = r
	return nil, errors.New("captured")
}

// TestLeanRequestAsReverseProxy: the lean forward prepares the outbound request's headers as httputil.ReverseProxy
// prepares them around its Rewrite, so that the owner sees the same request whichever path forwarded it.
func TestLeanRequestAsReverseProxy(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    http.Header
	}{
		{"plain", http.Header{"Accept": {"*/*"}, "User-Agent": {"curl/8.0"}}},
		{"no user agent", http.Header{"Accept": {"text/html"}}},
		{"empty user agent", http.Header{"User-Agent": {""}}},
		{"hop by hop", http.Header{"Connection": {"keep-alive, X-Hop"}, "X-Hop": {"1"}, "Keep-Alive": {"timeout=5"},
			"Proxy-Connection": {"keep-alive"}, "Proxy-Authorization": {"Basic eA=="}, "Trailer": {"X-T"},
			"Transfer-Encoding": {"chunked"}, "X-End": {"kept"}}},
		{"te trailers", http.Header{"Te": {"gzip, Trailers"}}},
		{"te without trailers", http.Header{"Te": {"gzip"}}},
		{"forwarding", http.Header{"Forwarded": {"for=192.0.2.1"}, "X-Forwarded-For": {"192.0.2.1"},
			"X-Forwarded-Host": {"other.example"}, "X-Forwarded-Proto": {"https"}, "X-Real-Ip": {"kept"}}},
	} {
		in := httptest.NewRequest(http.MethodGet, "http://relay.example/hosts/h/page?a=1&b=2", nil)
		in.Header = tc.h
		capture := &captureTransport{}
		rp := &httputil.ReverseProxy{
			Rewrite:      func(*httputil.ProxyRequest) {},
			Transport:    capture,
			ErrorHandler: func(http.ResponseWriter, *http.Request, error) {},
		}
		rp.ServeHTTP(httptest.NewRecorder(), in)
		if capture.out == nil {
			t.Fatalf("%s: the proxy sent nothing", tc.name)
		}
		lean := leanRequest(in)
		if !reflect.DeepEqual(lean.Header, capture.out.Header) {
			t.Errorf("%s: lean headers %v, ReverseProxy's %v", tc.name, lean.Header, capture.out.Header)
		}
		if lean.URL.String() != capture.out.URL.String() || lean.Close != capture.out.Close {
			t.Errorf("%s: lean %s close=%v, ReverseProxy's %s close=%v", tc.name, lean.URL, lean.Close,
				capture.out.URL, capture.out.Close)
		}
	}
}
