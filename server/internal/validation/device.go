package validation

import (
	"encoding/base64"
	"fmt"
	"path"
	"strings"
	"time"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
)

// maxFileMode is the largest file mode: permission bits plus setuid, setgid and sticky.
const maxFileMode = 0o7777

// DeviceSpec checks a device spec at path (for example "device.spec"). The task code runs the
// same checks on the spec it renders from a fleet template.
func DeviceSpec(path string, spec *fleetplanev1.DeviceSpec) List {
	var errs List
	errs = append(errs, configProviders(path+".config", spec.GetConfig())...)
	errs = append(errs, applications(path+".applications", spec.GetApplications())...)
	errs = append(errs, resourceMonitors(path+".resources", spec.GetResources())...)
	return errs
}

func configProviders(field string, providers []*fleetplanev1.ConfigProviderSpec) List {
	var errs List
	seen := map[string]int{}
	for i, p := range providers {
		at := fmt.Sprintf("%s[%d]", field, i)
		switch first, dup := seen[p.GetName()]; {
		case p.GetName() == "":
			errs.add(at+".name", "must be set; give each config provider a unique name")
		case dup:
			errs.add(at+".name", "%q is already the name of %s[%d]; use a unique name",
				p.GetName(), field, first)
		default:
			seen[p.GetName()] = i
		}
		errs = append(errs, configSource(at, p)...)
	}
	return errs
}

// configSource checks that exactly one of inline, gitRef and httpRef is set, and checks it.
func configSource(at string, p *fleetplanev1.ConfigProviderSpec) List {
	var errs List
	set := 0
	if len(p.GetInline()) > 0 {
		set++
	}
	if p.GetGitRef() != nil {
		set++
	}
	if p.GetHttpRef() != nil {
		set++
	}
	if set != 1 {
		errs.add(at, "exactly one of inline, gitRef and httpRef must be set, found %d", set)
	}
	for j, f := range p.GetInline() {
		errs = append(errs, inlineFile(fmt.Sprintf("%s.inline[%d]", at, j), f)...)
	}
	if g := p.GetGitRef(); g != nil {
		errs = append(errs, Name(at+".gitRef.repository", g.GetRepository())...)
		if g.GetPath() != "" && !path.IsAbs(g.GetPath()) {
			errs.add(at+".gitRef.path", "must be an absolute path inside the repository")
		}
		if g.GetMountPath() != "" {
			errs = append(errs, absolutePath(at+".gitRef.mountPath", g.GetMountPath())...)
		}
	}
	if h := p.GetHttpRef(); h != nil {
		errs = append(errs, Name(at+".httpRef.repository", h.GetRepository())...)
		if h.GetFilePath() == "" {
			errs.add(at+".httpRef.filePath", "must be set to the absolute path of the file to write")
		} else {
			errs = append(errs, absolutePath(at+".httpRef.filePath", h.GetFilePath())...)
		}
	}
	return errs
}

func inlineFile(at string, f *fleetplanev1.FileSpec) List {
	errs := absolutePath(at+".path", f.GetPath())
	switch f.GetContentEncoding() {
	case "", "plain":
	case "base64":
		if _, err := base64.StdEncoding.DecodeString(f.GetContent()); err != nil {
			errs.add(at+".content", "is not valid base64 (%v); encode it with standard base64",
				err)
		}
	default:
		errs.add(at+".contentEncoding", "%q is not supported; use \"plain\" or \"base64\"",
			f.GetContentEncoding())
	}
	if f.GetMode() < 0 || f.GetMode() > maxFileMode {
		errs.add(at+".mode", "%d is out of range; use a value from 0 to %d (0o7777)",
			f.GetMode(), maxFileMode)
	}
	return errs
}

// absolutePath checks that p is absolute and clean, with no ".." element.
func absolutePath(field, p string) List {
	var errs List
	switch {
	case p == "":
		errs.add(field, "must be set to an absolute path")
	case !path.IsAbs(p):
		errs.add(field, "must be an absolute path, got %q", p)
	case hasDotDot(p):
		errs.add(field, "must not contain \"..\", got %q", p)
	case path.Clean(p) != p:
		errs.add(field, "must be a clean path; use %q instead of %q", path.Clean(p), p)
	}
	return errs
}

func hasDotDot(p string) bool {
	for _, elem := range strings.Split(p, "/") {
		if elem == ".." {
			return true
		}
	}
	return false
}

func applications(field string, apps []*fleetplanev1.ApplicationProviderSpec) List {
	var errs List
	seen := map[string]int{}
	for i, a := range apps {
		at := fmt.Sprintf("%s[%d]", field, i)
		if first, dup := seen[a.GetName()]; dup && a.GetName() != "" {
			errs.add(at+".name", "%q is already the name of %s[%d]; use a unique name",
				a.GetName(), field, first)
		}
		seen[a.GetName()] = i
		if a.GetImage() == "" {
			errs.add(at+".image", "must be set to the application's image reference")
		}
	}
	return errs
}

func resourceMonitors(field string, monitors []*fleetplanev1.ResourceMonitor) List {
	var errs List
	for i, m := range monitors {
		at := fmt.Sprintf("%s[%d]", field, i)
		switch m.GetMonitorType() {
		case "CPU", "Memory", "Disk":
		default:
			errs.add(at+".monitorType", "%q is not supported; use CPU, Memory or Disk",
				m.GetMonitorType())
		}
		if s := m.GetSamplingInterval(); s != "" {
			if d, err := time.ParseDuration(s); err != nil || d <= 0 {
				errs.add(at+".samplingInterval", "%q is not a positive duration such as \"30s\"", s)
			}
		}
		for j, r := range m.GetAlertRules() {
			if r.GetPercentage() < 0 || r.GetPercentage() > 100 {
				errs.add(fmt.Sprintf("%s.alertRules[%d].percentage", at, j),
					"%v is out of range; use a value from 0 to 100", r.GetPercentage())
			}
		}
	}
	return errs
}
