package webhook_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/switchboard-relay/switchboard/webhook"
)

func ExampleVerify() {
	secret := []byte("the relay's --webhook-secret")
	body := []byte(`{"id":"1700000000000-0","type":"online","host_id":"laptop","seq":2,"epoch":1}`)
	header := webhook.Sign(secret, body, time.Now()) // what the relay sends in Switchboard-Signature

	fmt.Println(webhook.Verify(secret, header, body, 5*time.Minute))

	tampered := []byte(`{"id":"1700000000000-0","type":"offline","host_id":"laptop","seq":3,"epoch":1}`)
	err := webhook.Verify(secret, header, tampered, 5*time.Minute)
	fmt.Println(errors.Is(err, webhook.ErrSignatureMismatch))

	stale := webhook.Sign(secret, body, time.Now().Add(-time.Hour)) // a captured request, replayed
	err = webhook.Verify(secret, stale, body, 5*time.Minute)
	fmt.Println(errors.Is(err, webhook.ErrSignatureExpired))
	// Output:
	// <nil>
	// true
	// true
}
