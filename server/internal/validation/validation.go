// Package validation checks API objects before they are stored. Every error is a *FieldError
// whose Field is the JSON path of the offending value, for example
// "fleet.spec.template.spec.config[0].inline[1].path", so that clients can find it in the object
// they sent.
package validation

import (
	"fmt"
	"sort"
	"strings"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	k8svalidation "k8s.io/apimachinery/pkg/util/validation"
)

// ServerPrefix starts the annotation keys that only the server may set.
const ServerPrefix = "fleetplane.dev/"

// maxAnnotationsSize is the limit on the total size of an object's annotation keys and values,
// the same as Kubernetes uses.
const maxAnnotationsSize = 256 * 1024

// maxLabelsSize is the limit on the total size of an object's label keys and values. Labels
// are matched against every fleet selector, so they are kept small; large data belongs in
// annotations or the spec.
const maxLabelsSize = 64 * 1024

// FieldError is one invalid value.
type FieldError struct {
	// Field is the JSON path of the value.
	Field string
	// Message says what is wrong and what to do.
	Message string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

// List is the errors found in one object. Its message joins the first few of them.
type List []error

// maxListed is how many errors List.Error shows before it counts the rest.
const maxListed = 5

func (l List) Error() string {
	parts := make([]string, 0, maxListed+1)
	for i, err := range l {
		if i == maxListed {
			parts = append(parts, fmt.Sprintf("and %d more errors", len(l)-maxListed))
			break
		}
		parts = append(parts, err.Error())
	}
	return strings.Join(parts, "; ")
}

// Unwrap returns the errors so that errors.As finds the first *FieldError.
func (l List) Unwrap() []error { return l }

// Err returns l as an error, or nil when it is empty.
func (l List) Err() error {
	if len(l) == 0 {
		return nil
	}
	return l
}

// add appends a FieldError.
func (l *List) add(field, format string, args ...any) {
	*l = append(*l, &FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

// Name checks a resource name against the DNS subdomain rules.
func Name(field, name string) List {
	var errs List
	if name == "" {
		errs.add(field, "must be set; use lowercase letters, digits, '-' and '.'")
		return errs
	}
	for _, msg := range k8svalidation.IsDNS1123Subdomain(name) {
		errs.add(field, "invalid name %q: %s", name, msg)
	}
	return errs
}

// ObjectMeta checks the name, labels and annotations of metadata at path (for example
// "device.metadata").
func ObjectMeta(path string, m *fleetplanev1.ObjectMeta) List {
	errs := Name(path+".name", m.GetName())
	errs = append(errs, Labels(path+".labels", m.GetLabels())...)
	errs = append(errs, Annotations(path+".annotations", m.GetAnnotations())...)
	return errs
}

// Labels checks label keys (qualified names) and values against the Kubernetes rules, and
// their total size.
func Labels(field string, labels map[string]string) List {
	var errs List
	size := 0
	for k, v := range labels {
		size += len(k) + len(v)
	}
	if size > maxLabelsSize {
		errs.add(field, "total size %d bytes is over the limit of %d bytes; keep labels for "+
			"selecting and move other data to annotations", size, maxLabelsSize)
		return errs
	}
	for _, k := range sortedKeys(labels) {
		for _, msg := range k8svalidation.IsQualifiedName(k) {
			errs.add(fmt.Sprintf("%s[%s]", field, k), "invalid label key: %s", msg)
		}
		for _, msg := range k8svalidation.IsValidLabelValue(labels[k]) {
			errs.add(fmt.Sprintf("%s[%s]", field, k), "invalid label value %q: %s", labels[k], msg)
		}
	}
	return errs
}

// Annotations checks annotation keys (lowercase qualified names) and their total size.
func Annotations(field string, annotations map[string]string) List {
	var errs List
	size := 0
	for _, k := range sortedKeys(annotations) {
		size += len(k) + len(annotations[k])
		for _, msg := range k8svalidation.IsQualifiedName(strings.ToLower(k)) {
			errs.add(fmt.Sprintf("%s[%s]", field, k), "invalid annotation key: %s", msg)
		}
	}
	if size > maxAnnotationsSize {
		errs.add(field, "total size %d bytes is over the limit of %d bytes; store large data elsewhere",
			size, maxAnnotationsSize)
	}
	return errs
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
