package postgres

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/store"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// NOTE: the encoding below matches store/sqlite's, so that both backends store the same
// bytes. It could move to a package shared by the backends.

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
	deletedAt           *int64
	spec, status        []byte
	lastSeen            *int64
}

func scanResource(row pgx.Row) (*resourceRow, error) {
	var r resourceRow
	err := row.Scan(&r.kind, &r.name, &r.labels, &r.annotations, &r.owner, &r.generation,
		&r.version, &r.createdAt, &r.deletedAt, &r.spec, &r.status, &r.lastSeen)
	if err != nil {
		return nil, err
	}
	return &r, nil
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
	if r.deletedAt != nil {
		m.DeletionTimestamp = timestamppb.New(time.Unix(0, *r.deletedAt))
	}
	if m.Labels, err = decodeMap(r.labels); err != nil {
		return nil, fmt.Errorf("decode %s %q labels: %w", r.kind, r.name, err)
	}
	if m.Annotations, err = decodeMap(r.annotations); err != nil {
		return nil, fmt.Errorf("decode %s %q annotations: %w", r.kind, r.name, err)
	}
	if d, ok := obj.(*fleetplanev1.Device); ok && r.lastSeen != nil {
		if d.Status == nil {
			d.Status = &fleetplanev1.DeviceStatus{}
		}
		d.Status.LastSeen = timestamppb.New(time.Unix(0, *r.lastSeen))
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

// encodeMap returns m as JSON text with sorted keys, so equal maps encode to equal text.
func encodeMap(m map[string]string) string {
	if len(m) == 0 {
		return "{}"
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("encode string map: %v", err)) // a map of strings always encodes
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

// identify returns obj's kind and name, or an error if the kind is unknown or the name empty.
func identify(obj store.Object) (kind, name string, err error) {
	if obj == nil {
		return "", "", fmt.Errorf("%w: object is nil", store.ErrInvalidArgument)
	}
	kind = store.KindOf(obj)
	if _, err := store.New(kind); err != nil {
		return "", "", err
	}
	m := store.Meta(obj)
	name = m.Name
	if name == "" {
		return "", "", fmt.Errorf("%s: %w: metadata.name is missing; set a name",
			lower(kind), store.ErrInvalidArgument)
	}
	if err := checkText("metadata.name", name); err != nil {
		return "", "", fmt.Errorf("%s: %w", lower(kind), err)
	}
	if err := checkText("metadata.owner", m.Owner); err != nil {
		return "", "", fmt.Errorf("%s %q: %w", lower(kind), name, err)
	}
	return kind, name, nil
}

// lower turns a kind into lower-case words for messages: "TemplateVersion" becomes
// "template version".
func lower(kind string) string {
	var b strings.Builder
	for i, r := range kind {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte(' ')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// checkText returns an error naming field when value cannot be stored in a TEXT column:
// PostgreSQL rejects NUL bytes and invalid UTF-8.
func checkText(field, value string) error {
	if !utf8.ValidString(value) || strings.ContainsRune(value, 0) {
		return fmt.Errorf("%w: %s %q must be valid UTF-8 without NUL bytes",
			store.ErrInvalidArgument, field, value)
	}
	return nil
}

// cleanText makes s storable in a TEXT column, for text the store writes on its own account
// such as error messages.
func cleanText(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}
