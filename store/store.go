package store

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/proto"
)

// Resource kinds, as they appear in the "kind" field of resource files.
const (
	KindDevice            = "Device"
	KindFleet             = "Fleet"
	KindTemplateVersion   = "TemplateVersion"
	KindRepository        = "Repository"
	KindResourceSync      = "ResourceSync"
	KindEnrollmentRequest = "EnrollmentRequest"
	KindEvent             = "Event"
)

// Sentinel errors. Backends wrap them, so test with errors.Is.
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	// ErrConflict means the object changed since the caller read it (stale resource version).
	ErrConflict = errors.New("object was modified")
	// ErrFenced means the transaction ran under a Fence whose shard lease is no longer held.
	ErrFenced = errors.New("shard lease lost")
	// ErrInvalidArgument means a caller-supplied value (selector, page token) is malformed.
	ErrInvalidArgument = errors.New("invalid argument")
)

// Object is a stored resource: one of the generated messages *fleetplanev1.Device, Fleet,
// TemplateVersion, Repository, ResourceSync, EnrollmentRequest or Event. Each has metadata,
// spec and status fields (Event has no spec or status).
type Object = proto.Message

// Store is a transactional resource store shared by every server replica.
type Store interface {
	// InTx runs fn in one transaction and commits it if fn returns nil. A backend may run fn
	// more than once when the database reports a serialization failure, so fn must not have
	// side effects outside tx. Under a Fence (see WithFence) the commit also checks the lease.
	InTx(ctx context.Context, fn func(ctx context.Context, tx Tx) error) error

	// Subscribe returns a channel that receives a value, without blocking the writer, after
	// each commit in this process that wrote to the change log or the task queue. Call cancel
	// to stop. Watchers still poll, because commits by other replicas are not signalled here.
	Subscribe() (notify <-chan struct{}, cancel func())

	Close() error
}

// Tx is one transaction. It is not safe for concurrent use.
type Tx interface {
	ResourceTx
	TaskTx
	RenderTx
}

// ResourceTx reads and writes resources and the change log.
type ResourceTx interface {
	// Get returns the named object, or ErrNotFound.
	Get(ctx context.Context, kind, name string) (Object, error)
	// List returns one page of objects of a kind ordered by name.
	List(ctx context.Context, kind string, opts ListOptions) (*ListResult, error)
	// Create stores a new object with generation 1 and a new resource version. It returns
	// ErrAlreadyExists if the name is taken.
	Create(ctx context.Context, obj Object) (Object, error)
	// Update replaces labels, annotations, owner and spec, keeping the stored status and
	// creation time. Generation increases when the spec changed. If the object's resource
	// version is set and differs from the stored one, it returns ErrConflict.
	Update(ctx context.Context, obj Object) (Object, error)
	// UpdateStatus replaces only the status, with the same resource version check as Update.
	UpdateStatus(ctx context.Context, obj Object) (Object, error)
	// Delete removes the named object and returns its last state, or ErrNotFound.
	Delete(ctx context.Context, kind, name string) (Object, error)
	// DeleteAll removes every object of a kind and returns how many there were.
	DeleteAll(ctx context.Context, kind string) (int64, error)
	// Changes returns up to limit change-log entries of a kind (all kinds when empty) with a
	// version greater than after, oldest first.
	Changes(ctx context.Context, kind string, after int64, limit int) ([]Change, error)
	// LatestVersion returns the highest version in the change log.
	LatestVersion(ctx context.Context) (int64, error)
	// SetLastSeen records when devices last sent authenticated traffic. It does not change
	// their resource version and writes no change-log entry.
	SetLastSeen(ctx context.Context, seen map[string]time.Time) error
}

// ListOptions filters and pages a List call.
type ListOptions struct {
	// LabelSelector and FieldSelector use Kubernetes syntax; see package selector.
	LabelSelector string
	FieldSelector string
	// Limit is the page size. Zero means DefaultPageSize; larger than MaxPageSize is capped.
	Limit int
	// PageToken continues the listing after the last object of a previous page.
	PageToken string
}

// Page sizes for List.
const (
	DefaultPageSize = 1000
	MaxPageSize     = 1000
)

// ListResult is one page of a List call.
type ListResult struct {
	Items []Object
	// NextPageToken is empty on the last page.
	NextPageToken string
	// Version is the change log's latest version when the page was read.
	Version int64
}

// ChangeType says what a change did to its object.
type ChangeType int

// Change types.
const (
	Added ChangeType = iota + 1
	Modified
	Deleted
)

// Change is one entry of the change log.
type Change struct {
	Version int64
	Type    ChangeType
	Kind    string
	Name    string
	// Object is the object after the change, or its last state for Deleted.
	Object Object
	// Old is the object before the change. It is set only for the ChangeHook, never when the
	// change is read back from the log.
	Old Object
}

// ChangeHook runs inside the transaction of every resource write, after the write, so it can
// enqueue the tasks the change triggers. An error aborts the transaction.
type ChangeHook func(ctx context.Context, tx Tx, change Change) error
