package pagetoken

import (
	"errors"
	"testing"

	"github.com/fleetplane/fleetplane/store"
	"github.com/google/go-cmp/cmp"
)

func TestDecodeRoundTrip(t *testing.T) {
	tok := Encode("Device", "d-0001")
	got, err := Decode(tok, "Device", 1)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if diff := cmp.Diff([]string{"d-0001"}, got); diff != "" {
		t.Errorf("Decode (-want +got):\n%s", diff)
	}
}

func TestDecodeEmpty(t *testing.T) {
	got, err := Decode("", "Device", 1)
	if err != nil || got != nil {
		t.Errorf("Decode(\"\") = %v, %v; want nil, nil", got, err)
	}
}

func TestDecodeRejects(t *testing.T) {
	cases := map[string]string{
		"other scope":   Encode("Fleet", "f1"),
		"not base64":    "%%%",
		"not json":      "bm90IGpzb24",
		"wrong key len": Encode("Device", "a", "b"),
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Decode(tok, "Device", 1)
			if !errors.Is(err, store.ErrInvalidArgument) {
				t.Errorf("Decode(%q) error = %v; want ErrInvalidArgument", tok, err)
			}
		})
	}
}
