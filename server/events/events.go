// Package events records Event resources: what happened to which object, and who caused it.
//
// Event names sort newest first, so a plain List of events (ordered by name) shows the latest
// event at the top.
package events

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"time"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/store"
)

// Event types.
const (
	Normal  = "Normal"
	Warning = "Warning"
)

// MaxMessageLength is the longest message kept; longer ones are cut.
const MaxMessageLength = 1024

// Entry is one event to record.
type Entry struct {
	// Kind and Name identify the object the event is about.
	Kind string
	Name string
	// Reason is a short CamelCase word such as "FleetValid".
	Reason  string
	Type    string
	Message string
	// Actor is "user:NAME", "device:NAME" or "service:COMPONENT".
	Actor     string
	Component string
}

// Record creates an Event in tx. The caller must never put a secret in the message.
func Record(ctx context.Context, tx store.Tx, e Entry) error {
	now := time.Now()
	msg := e.Message
	if len(msg) > MaxMessageLength {
		msg = msg[:MaxMessageLength] + "..."
	}
	ev := &fleetplanev1.Event{
		Metadata:       &fleetplanev1.ObjectMeta{Name: newName(now)},
		InvolvedObject: &fleetplanev1.ObjectReference{Kind: e.Kind, Name: e.Name},
		Reason:         e.Reason,
		Message:        msg,
		Type:           e.Type,
		Source:         &fleetplanev1.EventSource{Component: e.Component},
		Actor:          e.Actor,
	}
	if _, err := tx.Create(ctx, ev); err != nil {
		return fmt.Errorf("record event %s for %s/%s: %w", e.Reason, e.Kind, e.Name, err)
	}
	return nil
}

// newName returns a name that sorts before every name made earlier: the nanoseconds left until
// the end of int64 time, zero-padded, then random hex to keep names made in the same
// nanosecond apart.
func newName(now time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("ev-%019d-%s", math.MaxInt64-now.UnixNano(), hex.EncodeToString(b[:]))
}
