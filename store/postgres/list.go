package postgres

import (
	"context"
	"fmt"

	"github.com/fleetplane/fleetplane/store"
	"github.com/fleetplane/fleetplane/store/internal/pagetoken"
	"github.com/fleetplane/fleetplane/store/selector"
	"github.com/jackc/pgx/v5"
)

// filterBatch is how many rows List reads at a time when a selector may skip rows.
const filterBatch = 500

const qResourcesAfter = `SELECT ` + resourceColumns + ` ` + resourceFrom +
	` WHERE r.kind = $1 AND r.name > $2 ORDER BY r.name LIMIT $3`

// List returns one page of objects of kind ordered by name, in the database's collation.
// Selectors are evaluated in Go on rows read in name order after the page token, until the
// page is full.
func (t *tx) List(ctx context.Context, kind string, opts store.ListOptions) (*store.ListResult, error) {
	q, err := parseListOptions(kind, opts)
	if err != nil {
		return nil, err
	}
	version, err := t.LatestVersion(ctx)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", lower(kind), err)
	}
	batch := q.limit + 1
	if !q.labels.Empty() || !q.fields.Empty() {
		batch = max(batch, filterBatch)
	}

	res := &store.ListResult{Version: version}
	last := q.after
	for {
		rows, err := t.rowsAfter(ctx, kind, last, batch)
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", lower(kind), err)
		}
		for _, row := range rows {
			last = row.name
			obj, ok, err := match(row, q.labels, q.fields)
			if err != nil {
				return nil, fmt.Errorf("list %s: %w", lower(kind), err)
			}
			if !ok {
				continue
			}
			if len(res.Items) == q.limit {
				// One more match exists, so this page is not the last.
				res.NextPageToken = pagetoken.Encode(kind, store.Meta(res.Items[q.limit-1]).Name)
				return res, nil
			}
			res.Items = append(res.Items, obj)
		}
		if len(rows) < batch {
			return res, nil
		}
	}
}

// listQuery is a List call's options after parsing.
type listQuery struct {
	labels selector.Labels
	fields selector.Fields
	after  string // the name that the page starts after
	limit  int
}

func parseListOptions(kind string, opts store.ListOptions) (listQuery, error) {
	prototype, err := store.New(kind)
	if err != nil {
		return listQuery{}, fmt.Errorf("list: %w", err)
	}
	q := listQuery{limit: pageSize(opts.Limit)}
	if q.labels, err = selector.ParseLabels(opts.LabelSelector); err != nil {
		return q, fmt.Errorf("list %s: %w: %v", lower(kind), store.ErrInvalidArgument, err)
	}
	if q.fields, err = selector.ParseFields(opts.FieldSelector, prototype); err != nil {
		return q, fmt.Errorf("list %s: %w: %v", lower(kind), store.ErrInvalidArgument, err)
	}
	after, err := pagetoken.Decode(opts.PageToken, kind, 1)
	if err != nil {
		return q, fmt.Errorf("list %s: %w", lower(kind), err)
	}
	if after != nil {
		if err := checkText("page token", after[0]); err != nil {
			return q, fmt.Errorf("list %s: %w", lower(kind), err)
		}
		q.after = after[0]
	}
	return q, nil
}

// pageSize applies the default and the cap to a requested page size.
func pageSize(limit int) int {
	switch {
	case limit <= 0:
		return store.DefaultPageSize
	case limit > store.MaxPageSize:
		return store.MaxPageSize
	}
	return limit
}

// match decodes row and reports whether it satisfies both selectors. Labels are checked
// first, so that rows they reject are never fully decoded.
func match(row *resourceRow, labels selector.Labels, fields selector.Fields) (store.Object, bool, error) {
	if !labels.Empty() {
		set, err := decodeMap(row.labels)
		if err != nil {
			return nil, false, fmt.Errorf("decode labels of %q: %w", row.name, err)
		}
		if !labels.Matches(set) {
			return nil, false, nil
		}
	}
	obj, err := row.object()
	if err != nil {
		return nil, false, err
	}
	return obj, fields.Matches(obj), nil
}

func (t *tx) rowsAfter(ctx context.Context, kind, after string, limit int) ([]*resourceRow, error) {
	rows, err := t.query(ctx, qResourcesAfter, kind, after, limit)
	if err != nil {
		return nil, err
	}
	return collect(t, rows, func(r pgx.Rows) (*resourceRow, error) { return scanResource(r) })
}
