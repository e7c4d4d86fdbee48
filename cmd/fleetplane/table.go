package main

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fleetplane/fleetplane/client"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// tableWidth is the maximum width of a table line, in characters.
const tableWidth = 80

// columnGap separates table columns.
const columnGap = "  "

// minColumnWidth is the narrowest a column is trimmed to, unless its header is narrower.
const minColumnWidth = 8

// flexColumns are the free-text columns that are trimmed before any other.
var flexColumns = map[string]bool{"MESSAGE": true, "LAST ERROR": true, "URL": true}

// flexMinWidth is the narrowest a flex column is trimmed to before other columns shrink.
const flexMinWidth = 16

// table lays out rows in columns that fit a width, trimming the widest cells.
type table struct {
	header []string
	widths []int
}

// newTable sizes the columns for the header and rows to fit width characters; a width of 0
// trims nothing.
func newTable(header []string, rows [][]string, width int) *table {
	widths := make([]int, len(header))
	for i, h := range header {
		widths[i] = utf8.RuneCountInString(h)
	}
	for _, row := range rows {
		for i, cell := range row {
			widths[i] = max(widths[i], utf8.RuneCountInString(cell))
		}
	}
	total := func() int {
		sum := len(columnGap) * (len(widths) - 1)
		for _, w := range widths {
			sum += w
		}
		return sum
	}
	if width == 0 {
		return &table{header: header, widths: widths}
	}
	// Free text gives way first, down to flexMinWidth, so names and reasons stay whole.
	for i, h := range header {
		if flexColumns[h] {
			widths[i] = max(min(widths[i], widths[i]-(total()-width)),
				min(widths[i], flexMinWidth))
		}
	}
	// Then shrink the widest column, one character at a time, until the table fits.
	for total() > width {
		widest := 0
		for i, w := range widths {
			if w > widths[widest] {
				widest = i
			}
		}
		if widths[widest] <= max(minColumnWidth, utf8.RuneCountInString(header[widest])) {
			break
		}
		widths[widest]--
	}
	return &table{header: header, widths: widths}
}

// writeHeader writes the header line.
func (t *table) writeHeader(w io.Writer) error { return t.writeRow(w, t.header) }

// writeRow writes one row, trimming cells to their column's width.
func (t *table) writeRow(w io.Writer, row []string) error {
	var b strings.Builder
	for i, cell := range row {
		cell = trim(cell, t.widths[i])
		b.WriteString(cell)
		if i < len(row)-1 {
			b.WriteString(strings.Repeat(" ", t.widths[i]-utf8.RuneCountInString(cell)))
			b.WriteString(columnGap)
		}
	}
	b.WriteByte('\n')
	_, err := io.WriteString(w, strings.TrimRight(b.String(), " \n")+"\n")
	return err
}

// trim shortens s to width characters, ending it with "…" when it was cut. Newlines and tabs
// become spaces so that a cell stays on one line.
func trim(s string, width int) string {
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' || r == '\r' {
			return ' '
		}
		return r
	}, s)
	if utf8.RuneCountInString(s) <= width {
		return s
	}
	runes := []rune(s)
	return string(runes[:width-1]) + "…"
}

// columns returns the table header for kind.
func columns(kind *client.Kind) []string {
	switch kind.Name {
	case "Device":
		return []string{"NAME", "OWNER", "SUMMARY", "UPDATED", "RENDERED", "AGE"}
	case "Fleet":
		return []string{"NAME", "SELECTOR", "VALID", "DEVICES", "AGE"}
	case "TemplateVersion":
		return []string{"NAME", "FLEET", "AGE"}
	case "Repository":
		return []string{"NAME", "TYPE", "URL", "ACCESSIBLE", "AGE"}
	case "ResourceSync":
		return []string{"NAME", "REPOSITORY", "PATH", "SYNCED", "AGE"}
	case "EnrollmentRequest":
		return []string{"NAME", "APPROVAL", "REQUESTED LABELS", "AGE"}
	case "Event":
		return []string{"LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"}
	case "Task":
		return []string{"KIND", "KEY", "STATE", "ATTEMPTS", "LAST ERROR"}
	case "Replica":
		return []string{"ID", "ADDRESS", "SHARDS", "AGENTS", "HEARTBEAT"}
	case "AgentSession":
		return []string{"DEVICE", "REPLICA", "AGE"}
	}
	return []string{"NAME"}
}

// row returns the table cells of obj; now is the reference for ages.
func row(obj proto.Message, now time.Time) []string {
	switch o := obj.(type) {
	case *fleetplanev1.Device:
		st := o.GetStatus()
		return []string{name(o.GetMetadata()), dash(o.GetMetadata().GetOwner()),
			dash(st.GetSummary().GetStatus()), dash(st.GetUpdated().GetStatus()),
			dash(st.GetConfig().GetRenderedVersion()), created(o.GetMetadata(), now)}
	case *fleetplanev1.Fleet:
		return []string{name(o.GetMetadata()), selector(o.GetSpec().GetSelector()),
			condition(o.GetStatus().GetConditions(), "Valid"),
			deviceCount(o.GetStatus().GetDevicesSummary()), created(o.GetMetadata(), now)}
	case *fleetplanev1.TemplateVersion:
		return []string{name(o.GetMetadata()), dash(o.GetSpec().GetFleet()),
			created(o.GetMetadata(), now)}
	case *fleetplanev1.Repository:
		return []string{name(o.GetMetadata()), dash(o.GetSpec().GetType()),
			dash(o.GetSpec().GetUrl()), condition(o.GetStatus().GetConditions(), "Accessible"),
			created(o.GetMetadata(), now)}
	case *fleetplanev1.ResourceSync:
		return []string{name(o.GetMetadata()), dash(o.GetSpec().GetRepository()),
			dash(o.GetSpec().GetPath()), condition(o.GetStatus().GetConditions(), "Synced"),
			created(o.GetMetadata(), now)}
	case *fleetplanev1.EnrollmentRequest:
		return []string{name(o.GetMetadata()), approval(o),
			selector(&fleetplanev1.LabelSelector{MatchLabels: o.GetSpec().GetLabels()}),
			created(o.GetMetadata(), now)}
	case *fleetplanev1.Event:
		ref := o.GetInvolvedObject()
		return []string{created(o.GetMetadata(), now), dash(o.GetType()), dash(o.GetReason()),
			dash(strings.ToLower(ref.GetKind()) + "/" + ref.GetName()), dash(o.GetMessage())}
	case *fleetplanev1.Task:
		return []string{o.GetKind(), o.GetKey(), dash(o.GetState()),
			strconv.Itoa(int(o.GetAttempts())), dash(o.GetLastError())}
	case *fleetplanev1.Replica:
		return []string{o.GetId(), dash(o.GetAddress()), strconv.Itoa(len(o.GetLeases())),
			strconv.FormatInt(o.GetConnectedAgents(), 10), age(o.GetHeartbeatTime(), now)}
	case *fleetplanev1.AgentSession:
		return []string{o.GetDevice(), o.GetReplica(), age(o.GetOpenTime(), now)}
	}
	return []string{fmt.Sprint(obj)}
}

// deviceCount formats a fleet's device total, or "-" when the server sent no summary.
// TODO: the server does not compute status.devicesSummary yet, so this is always "-".
func deviceCount(s *fleetplanev1.FleetDevicesSummary) string {
	if s == nil {
		return "-"
	}
	return strconv.FormatInt(s.GetTotal(), 10)
}

func name(m *fleetplanev1.ObjectMeta) string { return m.GetName() }

func created(m *fleetplanev1.ObjectMeta, now time.Time) string {
	return age(m.GetCreationTimestamp(), now)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// age formats the time since ts as 45s, 5m, 2h or 3d.
func age(ts *timestamppb.Timestamp, now time.Time) string {
	if ts == nil {
		return "-"
	}
	d := now.Sub(ts.AsTime())
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

// selector formats a label selector in the syntax of -l.
func selector(s *fleetplanev1.LabelSelector) string {
	var terms []string
	for k, v := range s.GetMatchLabels() {
		terms = append(terms, k+"="+v)
	}
	sort.Strings(terms)
	for _, r := range s.GetMatchExpressions() {
		switch r.GetOperator() {
		case "Exists":
			terms = append(terms, r.GetKey())
		case "DoesNotExist":
			terms = append(terms, "!"+r.GetKey())
		default:
			terms = append(terms, fmt.Sprintf("%s %s (%s)", r.GetKey(),
				strings.ToLower(r.GetOperator()), strings.Join(r.GetValues(), ",")))
		}
	}
	return dash(strings.Join(terms, ","))
}

func condition(conds []*fleetplanev1.Condition, typ string) string {
	for _, c := range conds {
		if c.GetType() == typ {
			return dash(c.GetStatus())
		}
	}
	return "Unknown"
}

func approval(er *fleetplanev1.EnrollmentRequest) string {
	for _, c := range er.GetStatus().GetConditions() {
		if c.GetStatus() == "True" && (c.GetType() == "Approved" || c.GetType() == "Denied") {
			return c.GetType()
		}
	}
	return "Pending"
}
