package sqlite

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/store"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var marshal = proto.MarshalOptions{Deterministic: true}

// resourceColumns selects a resources row r with the device's last-seen time l.
const resourceColumns = `r.kind, r.name, r.labels, r.annotations, r.owner, r.generation,
	r.resource_version, r.created_at, r.deleted_at, r.spec, r.status, l.seen_at`

const resourceFrom = `FROM resources r
	LEFT JOIN device_last_seen l ON r.kind = 'Device' AND l.name = r.name`

// resourceRow is one row of the resources table.
type resourceRow struct {
	kind, name          string
	labels, annotations string
	owner               string
	generation          int64
	version             int64
	createdAt           int64
	deletedAt           sql.NullInt64
	spec, status        []byte
	lastSeen            sql.NullInt64
}

type scanner interface{ Scan(dest ...any) error }

func scanResource(sc scanner) (*resourceRow, error) {
	var r resourceRow
	err := sc.Scan(&r.kind, &r.name, &r.labels, &r.annotations, &r.owner, &r.generation,
		&r.version, &r.createdAt, &r.deletedAt, &r.spec, &r.status, &r.lastSeen)
	if err != nil {
		return nil, err
	}
	// The driver scans an empty BLOB as nil, which would be written back as NULL into the
	// NOT NULL spec column by a status update.
	if r.spec == nil {
		r.spec = []byte{}
	}
	return &r, nil
}

// labelMap decodes the row's labels.
func (r *resourceRow) labelMap() (map[string]string, error) {
	return decodeMap(r.labels)
}

// object decodes the row into its resource message.
func (r *resourceRow) object() (store.Object, error) {
	obj, err := store.New(r.kind)
	if err != nil {
		return nil, err
	}
	if err := proto.Unmarshal(r.spec, obj); err != nil {
		return nil, fmt.Errorf("decode %s %q spec: %w", r.kind, r.name, err)
	}
	if r.status != nil {
		if err := unmarshalStatus(obj, r.status); err != nil {
			return nil, fmt.Errorf("decode %s %q status: %w", r.kind, r.name, err)
		}
	}
	setString(obj, "kind", r.kind)
	setString(obj, "api_version", store.APIVersion)

	m := store.Meta(obj)
	m.Name = r.name
	m.Owner = r.owner
	m.Generation = r.generation
	m.ResourceVersion = strconv.FormatInt(r.version, 10)
	m.CreationTimestamp = timestamppb.New(time.Unix(0, r.createdAt))
	if r.deletedAt.Valid {
		m.DeletionTimestamp = timestamppb.New(time.Unix(0, r.deletedAt.Int64))
	}
	if m.Labels, err = decodeMap(r.labels); err != nil {
		return nil, fmt.Errorf("decode %s %q labels: %w", r.kind, r.name, err)
	}
	if m.Annotations, err = decodeMap(r.annotations); err != nil {
		return nil, fmt.Errorf("decode %s %q annotations: %w", r.kind, r.name, err)
	}
	if d, ok := obj.(*fleetplanev1.Device); ok && r.lastSeen.Valid {
		if d.Status == nil {
			d.Status = &fleetplanev1.DeviceStatus{}
		}
		d.Status.LastSeen = timestamppb.New(time.Unix(0, r.lastSeen.Int64))
	}
	return obj, nil
}

// encodeSpec returns obj without metadata, status, kind and api_version, in deterministic
// binary form.
func encodeSpec(obj store.Object) ([]byte, error) {
	body := proto.Clone(obj)
	m := body.ProtoReflect()
	for _, name := range []protoreflect.Name{"metadata", "status", "kind", "api_version"} {
		if fd := m.Descriptor().Fields().ByName(name); fd != nil {
			m.Clear(fd)
		}
	}
	b, err := marshal.Marshal(body)
	if b == nil && err == nil {
		b = []byte{}
	}
	return b, err
}

// encodeStatus returns obj's status in deterministic binary form, or nil when it has none.
// A device's last_seen is left out because it lives in device_last_seen.
func encodeStatus(obj store.Object) ([]byte, error) {
	st := store.Status(obj)
	if st == nil {
		return nil, nil
	}
	if ds, ok := st.(*fleetplanev1.DeviceStatus); ok && ds.LastSeen != nil {
		ds = proto.Clone(ds).(*fleetplanev1.DeviceStatus)
		ds.LastSeen = nil
		st = ds
	}
	b, err := marshal.Marshal(st)
	if b == nil && err == nil {
		b = []byte{}
	}
	return b, err
}

func unmarshalStatus(obj store.Object, b []byte) error {
	m := obj.ProtoReflect()
	fd := m.Descriptor().Fields().ByName("status")
	if fd == nil {
		return nil
	}
	v := m.NewField(fd)
	if err := proto.Unmarshal(b, v.Message().Interface()); err != nil {
		return err
	}
	m.Set(fd, v)
	return nil
}

func setString(obj store.Object, field protoreflect.Name, value string) {
	m := obj.ProtoReflect()
	if fd := m.Descriptor().Fields().ByName(field); fd != nil {
		m.Set(fd, protoreflect.ValueOfString(value))
	}
}

func encodeMap(m map[string]string) string {
	if len(m) == 0 {
		return "{}"
	}
	// encoding/json sorts map keys, so equal maps encode to equal text.
	b, err := json.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("encode string map: %v", err))
	}
	return string(b)
}

func decodeMap(s string) (map[string]string, error) {
	if s == "" || s == "{}" {
		return nil, nil
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, err
	}
	return m, nil
}

// parseVersion parses a caller's resource_version. Empty returns 0.
func parseVersion(kind, name, rv string) (int64, error) {
	if rv == "" {
		return 0, nil
	}
	v, err := strconv.ParseInt(rv, 10, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("%s %q: %w: metadata.resource_version %q is not a version this "+
			"store issued; get the object again and retry", lower(kind), name,
			store.ErrInvalidArgument, rv)
	}
	return v, nil
}
