package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/store"
	"github.com/google/go-cmp/cmp"
)

func list(t *testing.T, s store.Store, kind string, opts store.ListOptions) *store.ListResult {
	t.Helper()
	var res *store.ListResult
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		var err error
		res, err = tx.List(ctx, kind, opts)
		return err
	})
	return res
}

func names(items []store.Object) []string {
	out := []string{}
	for _, it := range items {
		out = append(out, store.Meta(it).Name)
	}
	return out
}

func testListLabelSelector(t *testing.T, open Opener) {
	s := open(t, nil)
	create(t, s, device("a", map[string]string{"env": "prod", "zone": "x"}, "img"))
	create(t, s, device("b", map[string]string{"env": "dev", "zone": "y"}, "img"))
	create(t, s, device("c", map[string]string{"env": "prod", "canary": "true"}, "img"))
	create(t, s, device("d", nil, "img"))
	cases := []struct {
		selector string
		want     []string
	}{
		{"", []string{"a", "b", "c", "d"}},
		{"env=prod", []string{"a", "c"}},
		{"env==dev", []string{"b"}},
		{"env!=prod", []string{"b", "d"}},
		{"zone in (x,y)", []string{"a", "b"}},
		{"zone notin (x)", []string{"b", "c", "d"}},
		{"canary", []string{"c"}},
		{"!canary", []string{"a", "b", "d"}},
		{"env=prod,!canary", []string{"a"}},
	}
	for _, c := range cases {
		res := list(t, s, store.KindDevice, store.ListOptions{LabelSelector: c.selector})
		if diff := cmp.Diff(c.want, names(res.Items)); diff != "" {
			t.Errorf("label selector %q (-want +got):\n%s", c.selector, diff)
		}
	}
}

func testListFieldSelector(t *testing.T, open Opener) {
	s := open(t, nil)
	for _, d := range []struct {
		name, owner, summary, updated string
	}{
		{"a", "Fleet/f1", "Online", "UpToDate"},
		{"b", "Fleet/f1", "Error", "OutOfDate"},
		{"c", "Fleet/f2", "Online", "OutOfDate"},
		{"d", "", "", ""},
	} {
		obj := device(d.name, nil, "img")
		obj.Metadata.Owner = d.owner
		create(t, s, obj)
		if d.summary == "" {
			continue
		}
		obj.Status = &fleetplanev1.DeviceStatus{
			Summary: &fleetplanev1.DeviceSummaryStatus{Status: d.summary},
			Updated: &fleetplanev1.DeviceUpdatedStatus{Status: d.updated},
		}
		inTx(t, s, func(ctx context.Context, tx store.Tx) error {
			_, err := tx.UpdateStatus(ctx, obj)
			return err
		})
	}
	cases := []struct {
		selector string
		want     []string
	}{
		{"metadata.name=b", []string{"b"}},
		{"metadata.name!=b", []string{"a", "c", "d"}},
		{"metadata.owner=Fleet/f1", []string{"a", "b"}},
		{"metadata.owner==", []string{"d"}},
		{"status.summary.status=Online", []string{"a", "c"}},
		{"status.updated.status!=OutOfDate", []string{"a", "d"}},
		{"metadata.owner=Fleet/f1,status.summary.status=Online", []string{"a"}},
	}
	for _, c := range cases {
		res := list(t, s, store.KindDevice, store.ListOptions{FieldSelector: c.selector})
		if diff := cmp.Diff(c.want, names(res.Items)); diff != "" {
			t.Errorf("field selector %q (-want +got):\n%s", c.selector, diff)
		}
	}

	// A selector that matches few objects still pages correctly.
	var got []string
	opts := store.ListOptions{FieldSelector: "metadata.name!=b", Limit: 1}
	for range 10 {
		res := list(t, s, store.KindDevice, opts)
		got = append(got, names(res.Items)...)
		if res.NextPageToken == "" {
			break
		}
		opts.PageToken = res.NextPageToken
	}
	if diff := cmp.Diff([]string{"a", "c", "d"}, got); diff != "" {
		t.Errorf("paged field selector (-want +got):\n%s", diff)
	}
}

func testListPageSize(t *testing.T, open Opener) {
	s := open(t, nil)
	total := store.MaxPageSize + 5
	createDevices(t, s, "dev-%05d", 0, total)
	for _, limit := range []int{0, store.MaxPageSize + 1000} {
		res := list(t, s, store.KindDevice, store.ListOptions{Limit: limit})
		want := store.MaxPageSize
		if limit == 0 {
			want = store.DefaultPageSize
		}
		if len(res.Items) != want {
			t.Errorf("List with limit %d returned %d items; want %d", limit, len(res.Items), want)
		}
		if res.NextPageToken == "" {
			t.Errorf("List with limit %d of %d devices has no page token", limit, total)
		}
	}
	res := list(t, s, store.KindDevice, store.ListOptions{Limit: total})
	if res.NextPageToken == "" {
		t.Errorf("List capped at %d of %d devices has no page token", store.MaxPageSize, total)
	}
	exact := list(t, s, store.KindDevice, store.ListOptions{Limit: 5,
		PageToken: pageTokenBefore(t, s, total-5)})
	if len(exact.Items) != 5 || exact.NextPageToken != "" {
		t.Errorf("last full page: %d items, token %q; want 5 items and no token",
			len(exact.Items), exact.NextPageToken)
	}
	if v := latestVersion(t, s); res.Version != v {
		t.Errorf("ListResult.Version = %d; want latest version %d", res.Version, v)
	}
}

// pageTokenBefore returns the token of a page of n items starting at the first device.
func pageTokenBefore(t *testing.T, s store.Store, n int) string {
	t.Helper()
	opts := store.ListOptions{Limit: store.MaxPageSize}
	for n > 0 {
		opts.Limit = min(n, store.MaxPageSize)
		res := list(t, s, store.KindDevice, opts)
		opts.PageToken = res.NextPageToken
		n -= len(res.Items)
	}
	return opts.PageToken
}

func testListInvalid(t *testing.T, open Opener) {
	s := open(t, nil)
	createDevices(t, s, "dev-%d", 0, 3)
	create(t, s, kindCases[1].make("f1", "a"))
	create(t, s, kindCases[1].make("f2", "a"))
	fleetToken := list(t, s, store.KindFleet, store.ListOptions{Limit: 1}).NextPageToken
	if fleetToken == "" {
		t.Fatalf("List of 2 fleets with limit 1 returned no token")
	}
	cases := map[string]store.ListOptions{
		"label selector":  {LabelSelector: "env in (prod"},
		"field selector":  {FieldSelector: "spec.nothing=1"},
		"field operator":  {FieldSelector: "metadata.name in (a)"},
		"malformed token": {PageToken: "not a token!"},
		"foreign token":   {PageToken: fleetToken},
	}
	for name, opts := range cases {
		err := s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
			_, err := tx.List(ctx, store.KindDevice, opts)
			return err
		})
		wantErr(t, err, store.ErrInvalidArgument, name)
	}
}

// testListUnderChurn pages through stable devices while other devices are created and deleted
// between pages, before and after the cursor.
func testListUnderChurn(t *testing.T, open Opener) {
	s := open(t, nil)
	const stable, pageSize = 2500, 100
	createDevices(t, s, "dev-%05d-s", 0, stable)
	rng := rand.New(rand.NewPCG(1, 2))
	var churn []string

	seen := map[string]int{}
	opts := store.ListOptions{Limit: pageSize}
	pages := 0
	for {
		res := list(t, s, store.KindDevice, opts)
		pages++
		for _, name := range names(res.Items) {
			seen[name]++
		}
		if res.NextPageToken == "" {
			break
		}
		if pages > 2*stable/pageSize {
			t.Fatalf("listing did not end after %d pages", pages)
		}
		opts.PageToken = res.NextPageToken
		churn = mutateBetweenPages(t, s, rng, churn, stable)
	}

	for i := range stable {
		name := fmt.Sprintf("dev-%05d-s", i)
		if seen[name] != 1 {
			t.Errorf("device %s listed %d times; want once", name, seen[name])
		}
	}
	var dup []string
	for name, n := range seen {
		if n > 1 {
			dup = append(dup, name)
		}
	}
	sort.Strings(dup)
	if len(dup) > 0 {
		t.Errorf("devices listed more than once: %v", dup)
	}
	if pages < stable/pageSize {
		t.Errorf("listing took %d pages; want at least %d", pages, stable/pageSize)
	}
}

// mutateBetweenPages creates a few devices at random places in the name order and deletes some
// of those created earlier. It returns the churn devices that still exist.
func mutateBetweenPages(
	t *testing.T, s store.Store, rng *rand.Rand, churn []string, stable int,
) []string {
	t.Helper()
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		for range 5 {
			name := fmt.Sprintf("dev-%05d-c%d", rng.IntN(stable), rng.IntN(1000000))
			if _, err := tx.Create(ctx, device(name, nil, "img")); err == nil {
				churn = append(churn, name)
			} else if !errors.Is(err, store.ErrAlreadyExists) {
				return err
			}
		}
		for range 3 {
			if len(churn) == 0 {
				break
			}
			i := rng.IntN(len(churn))
			if _, err := tx.Delete(ctx, store.KindDevice, churn[i]); err != nil {
				return err
			}
			churn = append(churn[:i], churn[i+1:]...)
		}
		return nil
	})
	return churn
}
