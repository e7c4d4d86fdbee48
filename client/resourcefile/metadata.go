package resourcefile

import (
	"fmt"
	"sort"
	"strings"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"google.golang.org/protobuf/proto"
	k8svalidation "k8s.io/apimachinery/pkg/util/validation"
)

// checkMetadata applies the server's rules for names and labels before anything is sent, so
// that apply can reject a whole file without writing part of it. The server checks the same
// rules, and more, again.
func checkMetadata(obj proto.Message) *fieldError {
	m, _ := field(obj, "metadata").(*fleetplanev1.ObjectMeta)
	if m.GetName() == "" {
		return &fieldError{"metadata.name", "missing; set a name of lowercase letters, digits, " +
			"'-' and '.'"}
	}
	if errs := k8svalidation.IsDNS1123Subdomain(m.GetName()); len(errs) > 0 {
		return &fieldError{"metadata.name", fmt.Sprintf("invalid name %q: %s", m.GetName(),
			strings.Join(errs, "; "))}
	}
	if err := checkLabels("metadata.labels", m.GetLabels()); err != nil {
		return err
	}
	if f, ok := obj.(*fleetplanev1.Fleet); ok {
		if err := checkLabels("spec.selector.matchLabels",
			f.GetSpec().GetSelector().GetMatchLabels()); err != nil {
			return err
		}
		return checkLabels("spec.template.metadata.labels",
			f.GetSpec().GetTemplate().GetMetadata().GetLabels())
	}
	return nil
}

func checkLabels(path string, labels map[string]string) *fieldError {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if errs := k8svalidation.IsQualifiedName(k); len(errs) > 0 {
			return &fieldError{mapPath(path, k), fmt.Sprintf("invalid label key %q: %s", k,
				strings.Join(errs, "; "))}
		}
		if errs := k8svalidation.IsValidLabelValue(labels[k]); len(errs) > 0 {
			return &fieldError{mapPath(path, k), fmt.Sprintf("invalid label value %q: %s",
				labels[k], strings.Join(errs, "; "))}
		}
	}
	return nil
}
