package validation

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/store/selector"
	"google.golang.org/protobuf/types/known/structpb"
	k8svalidation "k8s.io/apimachinery/pkg/util/validation"
)

// Device checks a device at path (the request field, "device").
func Device(path string, d *fleetplanev1.Device) List {
	errs := ObjectMeta(path+".metadata", d.GetMetadata())
	return append(errs, DeviceSpec(path+".spec", d.GetSpec())...)
}

// Fleet checks a fleet's metadata, selector, template and rollout policy. Template parameters
// are checked by the caller.
func Fleet(path string, f *fleetplanev1.Fleet) List {
	errs := ObjectMeta(path+".metadata", f.GetMetadata())
	spec := path + ".spec"
	errs = append(errs, labelSelector(spec+".selector", f.GetSpec().GetSelector())...)
	tmpl := f.GetSpec().GetTemplate()
	errs = append(errs, Labels(spec+".template.metadata.labels", tmpl.GetMetadata().GetLabels())...)
	errs = append(errs, DeviceSpec(spec+".template.spec", tmpl.GetSpec())...)
	errs = append(errs, rolloutPolicy(spec+".rolloutPolicy", f.GetSpec().GetRolloutPolicy())...)
	return errs
}

func labelSelector(field string, ls *fleetplanev1.LabelSelector) List {
	var errs List
	if _, err := selector.FromLabelSelector(ls); err != nil {
		errs.add(field, "%v", err)
	}
	return errs
}

func rolloutPolicy(field string, p *fleetplanev1.RolloutPolicy) List {
	var errs List
	if p == nil {
		return nil
	}
	errs = append(errs, percentage(field+".successThreshold", p.GetSuccessThreshold(), 0)...)
	if t := p.GetDefaultUpdateTimeout(); t != "" {
		if d, err := time.ParseDuration(t); err != nil || d <= 0 {
			errs.add(field+".defaultUpdateTimeout", "%q is not a positive duration such as \"1h\"", t)
		}
	}
	sel := p.GetDeviceSelection()
	if s := sel.GetStrategy(); s != "" && s != "BatchSequence" {
		errs.add(field+".deviceSelection.strategy", "%q is not supported; use \"BatchSequence\"", s)
	}
	for i, b := range sel.GetSequence() {
		at := fmt.Sprintf("%s.deviceSelection.sequence[%d]", field, i)
		if b.GetSelector() != nil {
			errs = append(errs, labelSelector(at+".selector", b.GetSelector())...)
		}
		errs = append(errs, batchLimit(at+".limit", b.GetLimit())...)
		errs = append(errs, percentage(at+".successThreshold", b.GetSuccessThreshold(), 0)...)
	}
	if b := p.GetDisruptionBudget(); b != nil {
		errs = append(errs, disruptionBudget(field+".disruptionBudget", b)...)
	}
	return errs
}

// batchLimit checks a batch limit: a whole number of devices of at least 1, or "N%" with N
// from 1 to 100. An unset limit is allowed and means the whole remaining fleet.
func batchLimit(field string, v *structpb.Value) List {
	var errs List
	switch k := v.GetKind().(type) {
	case nil:
	case *structpb.Value_NumberValue:
		n := k.NumberValue
		if n < 1 || n != math.Trunc(n) || n > math.MaxInt32 {
			errs.add(field, "%v is not a valid device count; use a whole number of at least 1", n)
		}
	case *structpb.Value_StringValue:
		errs = append(errs, percentage(field, k.StringValue, 1)...)
		if k.StringValue == "" {
			errs.add(field, "must be a device count or a percentage such as \"20%%\"")
		}
	default:
		errs.add(field, "must be a device count (a number) or a percentage (a string such as \"20%%\")")
	}
	return errs
}

var percentPattern = regexp.MustCompile(`^([0-9]{1,3})%$`)

// percentage checks an optional "N%" value with min <= N <= 100.
func percentage(field, s string, min int) List {
	var errs List
	if s == "" {
		return nil
	}
	m := percentPattern.FindStringSubmatch(s)
	if m == nil {
		errs.add(field, "%q is not a percentage; use a form such as \"20%%\"", s)
		return errs
	}
	n, _ := strconv.Atoi(m[1])
	if n < min || n > 100 {
		errs.add(field, "%q is out of range; use %d%% to 100%%", s, min)
	}
	return errs
}

func disruptionBudget(field string, b *fleetplanev1.DisruptionBudget) List {
	var errs List
	for i, key := range b.GetGroupBy() {
		for _, msg := range k8svalidation.IsQualifiedName(key) {
			errs.add(fmt.Sprintf("%s.groupBy[%d]", field, i), "invalid label key %q: %s", key, msg)
		}
	}
	if b.GetMinAvailable() < 0 {
		errs.add(field+".minAvailable", "%d is negative; use 0 or more", b.GetMinAvailable())
	}
	if b.GetMaxUnavailable() < 0 {
		errs.add(field+".maxUnavailable", "%d is negative; use 0 or more", b.GetMaxUnavailable())
	}
	return errs
}

// Repository checks a repository's metadata, type and URL.
func Repository(path string, r *fleetplanev1.Repository) List {
	errs := ObjectMeta(path+".metadata", r.GetMetadata())
	spec := path + ".spec"
	typ := r.GetSpec().GetType()
	if typ != "git" && typ != "http" {
		errs.add(spec+".type", "%q is not supported; use \"git\" or \"http\"", typ)
	}
	errs = append(errs, repositoryURL(spec+".url", typ, r.GetSpec().GetUrl())...)
	return errs
}

// scpLikeURL matches the short SSH form that git accepts, such as git@example.com:org/repo.git.
var scpLikeURL = regexp.MustCompile(`^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^/].*$`)

func repositoryURL(field, typ, raw string) List {
	var errs List
	if raw == "" {
		errs.add(field, "must be set to the repository's URL")
		return errs
	}
	if typ == "git" && scpLikeURL.MatchString(raw) {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		errs.add(field, "is not a valid URL: %v", errorWithoutURL(err))
		return errs
	}
	schemes := map[string]bool{"http": true, "https": true}
	if typ == "git" {
		schemes["ssh"], schemes["git"] = true, true
	}
	if !schemes[u.Scheme] || u.Host == "" {
		errs.add(field, "must be an absolute URL with a host and one of the schemes %s",
			strings.Join(sortedSet(schemes), ", "))
	}
	return append(errs, urlCredentials(field, u)...)
}

// urlCredentials rejects credentials in a repository URL, because reads return the URL as
// stored. An SSH user name such as git@ is not a secret and stays allowed. The message never
// repeats the URL.
func urlCredentials(field string, u *url.URL) List {
	var errs List
	if u.User == nil {
		return nil
	}
	_, hasPassword := u.User.Password()
	switch {
	case u.Scheme == "http" || u.Scheme == "https":
		errs.add(field, "must not contain a user name or password; remove the part before @ "+
			"and set spec.httpConfig.username with spec.httpConfig.password or "+
			"spec.httpConfig.token")
	case hasPassword:
		errs.add(field, "must not contain a password; remove it and set "+
			"spec.sshConfig.sshPrivateKey")
	}
	return errs
}

// errorWithoutURL drops the URL from a url.Error, because the URL may hold a password.
func errorWithoutURL(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

func sortedSet(set map[string]bool) []string {
	m := make(map[string]string, len(set))
	for k := range set {
		m[k] = ""
	}
	return sortedKeys(m)
}

// ResourceSync checks a resource sync's metadata, repository name and path.
func ResourceSync(path string, r *fleetplanev1.ResourceSync) List {
	errs := ObjectMeta(path+".metadata", r.GetMetadata())
	spec := path + ".spec"
	errs = append(errs, Name(spec+".repository", r.GetSpec().GetRepository())...)
	if p := r.GetSpec().GetPath(); p == "" {
		errs.add(spec+".path", "must be set to the repository path that holds the fleet files")
	} else if !strings.HasPrefix(p, "/") {
		errs.add(spec+".path", "must be an absolute path inside the repository, got %q", p)
	}
	return errs
}

// EnrollmentRequest checks the name, labels and CSR of an enrollment request. The CSR must be a
// PEM CERTIFICATE REQUEST with a valid signature whose common name is the request name.
func EnrollmentRequest(path string, r *fleetplanev1.EnrollmentRequest) List {
	errs := ObjectMeta(path+".metadata", r.GetMetadata())
	spec := path + ".spec"
	errs = append(errs, Labels(spec+".labels", r.GetSpec().GetLabels())...)
	block, _ := pem.Decode([]byte(r.GetSpec().GetCsr()))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		errs.add(spec+".csr", "must be a PEM block of type CERTIFICATE REQUEST")
		return errs
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		errs.add(spec+".csr", "cannot be parsed: %v", err)
		return errs
	}
	if err := csr.CheckSignature(); err != nil {
		errs.add(spec+".csr", "has an invalid signature: %v", err)
	}
	if cn, name := csr.Subject.CommonName, r.GetMetadata().GetName(); cn != name {
		errs.add(spec+".csr", "common name %q must equal the request name %q", cn, name)
	}
	return errs
}
