package apply

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openManager(t *testing.T, dataDir, root string) *Manager {
	t.Helper()
	m, err := Open(dataDir, root, discard())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := m.Recover(context.Background()); err != nil {
		t.Fatalf("Recover: %v", err)
	}
	return m
}

func spec(version string, files ...*fleetplanev1.RenderedFile) *fleetplanev1.RenderedDeviceSpec {
	return &fleetplanev1.RenderedDeviceSpec{RenderedVersion: version, Files: files}
}

func file(path, content string, mode int32) *fleetplanev1.RenderedFile {
	return &fleetplanev1.RenderedFile{Path: path, Content: []byte(content), Mode: mode}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return string(data)
}

func TestApplyCreatesMissingRoot(t *testing.T) {
	root := filepath.Join(t.TempDir(), "new", "root")
	m := openManager(t, t.TempDir(), root)

	if err := m.Apply(context.Background(), spec("1", file("/etc/motd", "hi\n", 0))); err != nil {
		t.Fatalf("Apply: %v", err)
	}

	if got := readFile(t, filepath.Join(root, "etc/motd")); got != "hi\n" {
		t.Errorf("etc/motd = %q; want %q", got, "hi\n")
	}
}

func TestApplyWritesFilesWithModes(t *testing.T) {
	root := t.TempDir()
	m := openManager(t, t.TempDir(), root)

	err := m.Apply(context.Background(), spec("1",
		file("/etc/app/app.conf", "a=1\n", 0),
		file("etc/app/secret", "s3", 0o600),
		file("/usr/local/bin/run", "#!/bin/sh\n", 0o755)))
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}

	for _, c := range []struct {
		path    string
		content string
		mode    fs.FileMode
	}{
		{"etc/app/app.conf", "a=1\n", 0o644},
		{"etc/app/secret", "s3", 0o600},
		{"usr/local/bin/run", "#!/bin/sh\n", 0o755},
	} {
		full := filepath.Join(root, c.path)
		if got := readFile(t, full); got != c.content {
			t.Errorf("%s content = %q, want %q", c.path, got, c.content)
		}
		info, err := os.Stat(full)
		if err != nil {
			t.Fatal(err)
		}
		if got := info.Mode().Perm(); got != c.mode {
			t.Errorf("%s mode = %#o, want %#o", c.path, got, c.mode)
		}
	}
	if got := m.Versions().Applied; got != "1" {
		t.Errorf("Applied = %q, want 1", got)
	}
	leftovers, _ := filepath.Glob(filepath.Join(root, "etc/app", tempPrefix+"*"))
	if len(leftovers) != 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}
}

func TestApplyRollsBackOnFailure(t *testing.T) {
	root := t.TempDir()
	m := openManager(t, t.TempDir(), root)
	ctx := context.Background()
	if err := m.Apply(ctx, spec("1", file("/etc/a.conf", "old a", 0o640))); err != nil {
		t.Fatalf("Apply 1: %v", err)
	}
	// A regular file where the second file's directory should be makes its write fail.
	if err := os.WriteFile(filepath.Join(root, "blocker"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}

	err := m.Apply(ctx, spec("2",
		file("/etc/a.conf", "new a", 0o600),
		file("/etc/new.conf", "new", 0),
		file("/blocker/b.conf", "b", 0)))
	if err == nil {
		t.Fatal("Apply 2 succeeded, want an error")
	}
	if !strings.Contains(err.Error(), "/blocker/b.conf") {
		t.Errorf("error %q does not name the failing file", err)
	}

	if got := readFile(t, filepath.Join(root, "etc/a.conf")); got != "old a" {
		t.Errorf("a.conf = %q after rollback, want the old content", got)
	}
	info, err := os.Stat(filepath.Join(root, "etc/a.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o640 {
		t.Errorf("a.conf mode = %#o after rollback, want 0640", info.Mode().Perm())
	}
	if _, err := os.Stat(filepath.Join(root, "etc/new.conf")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("new.conf exists after rollback (stat err %v)", err)
	}
	want := Versions{Applied: "1", Rejected: "2", RejectedError: m.Versions().RejectedError}
	if diff := cmp.Diff(want, m.Versions()); diff != "" {
		t.Errorf("Versions (-want +got):\n%s", diff)
	}
	if m.Versions().RejectedError == "" {
		t.Error("RejectedError is empty")
	}
}

func TestApplyRollsBackRemovals(t *testing.T) {
	root := t.TempDir()
	m := openManager(t, t.TempDir(), root)
	ctx := context.Background()
	if err := m.Apply(ctx, spec("1", file("/etc/keep", "k", 0), file("/etc/gone", "g", 0))); err != nil {
		t.Fatalf("Apply 1: %v", err)
	}
	// A directory where a file should be fails the write after the file list is checked.
	if err := os.MkdirAll(filepath.Join(root, "etc/dir"), 0o755); err != nil {
		t.Fatal(err)
	}

	err := m.Apply(ctx, spec("2", file("/etc/keep", "k2", 0), file("/etc/dir", "d", 0)))
	if err == nil {
		t.Fatal("Apply 2 succeeded, want an error")
	}

	if got := readFile(t, filepath.Join(root, "etc/keep")); got != "k" {
		t.Errorf("keep = %q, want k", got)
	}
	if got := readFile(t, filepath.Join(root, "etc/gone")); got != "g" {
		t.Errorf("gone = %q, want g", got)
	}
}

func TestApplyRemovesStaleFiles(t *testing.T) {
	root := t.TempDir()
	m := openManager(t, t.TempDir(), root)
	ctx := context.Background()
	if err := m.Apply(ctx, spec("1", file("/etc/a", "a", 0), file("/etc/b", "b", 0))); err != nil {
		t.Fatalf("Apply 1: %v", err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/other"), []byte("o"), 0o644); err != nil {
		t.Fatal(err)
	}

	if err := m.Apply(ctx, spec("2", file("/etc/a", "a2", 0))); err != nil {
		t.Fatalf("Apply 2: %v", err)
	}

	if _, err := os.Stat(filepath.Join(root, "etc/b")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("b still exists (stat err %v)", err)
	}
	if got := readFile(t, filepath.Join(root, "etc/a")); got != "a2" {
		t.Errorf("a = %q, want a2", got)
	}
	if got := readFile(t, filepath.Join(root, "etc/other")); got != "o" {
		t.Errorf("a file no spec wrote changed: %q", got)
	}
}

func TestApplyRejectsBadFiles(t *testing.T) {
	outside := t.TempDir()
	cases := []struct {
		name string
		file *fleetplanev1.RenderedFile
		want string
	}{
		{"dotdot", file("/etc/../../evil", "x", 0), "escapes the root"},
		{"relative dotdot", file("../evil", "x", 0), "escapes the root"},
		{"empty", file("", "x", 0), "path is empty"},
		{"root", file("/", "x", 0), "names the root"},
		{"mode", file("/etc/m", "x", 0o10000), "mode"},
		{"symlink", file("/link/evil", "x", 0), "symbolic link"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			if err := os.Symlink(outside, filepath.Join(root, "link")); err != nil {
				t.Fatal(err)
			}
			m := openManager(t, t.TempDir(), root)

			err := m.Apply(context.Background(), spec("1", c.file))

			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Apply error = %v, want one containing %q", err, c.want)
			}
			if got := m.Versions().Rejected; got != "1" {
				t.Errorf("Rejected = %q, want 1", got)
			}
			entries, _ := os.ReadDir(outside)
			if len(entries) != 0 {
				t.Errorf("files written outside the root: %v", entries)
			}
		})
	}
}

func TestApplyIgnoresOlderVersion(t *testing.T) {
	root := t.TempDir()
	m := openManager(t, t.TempDir(), root)
	ctx := context.Background()
	if err := m.Apply(ctx, spec("7", file("/v", "7", 0))); err != nil {
		t.Fatalf("Apply 7: %v", err)
	}

	for _, v := range []string{"6", "7"} {
		err := m.Apply(ctx, spec(v, file("/v", v+" again", 0)))
		if !errors.Is(err, ErrNotNewer) {
			t.Errorf("Apply %s error = %v, want ErrNotNewer", v, err)
		}
	}

	if got := readFile(t, filepath.Join(root, "v")); got != "7" {
		t.Errorf("file = %q, want 7", got)
	}
	if got := m.Versions().Highest(); got != "7" {
		t.Errorf("Highest = %q, want 7", got)
	}
}

func TestOpenKeepsStateAcrossRestart(t *testing.T) {
	root, data := t.TempDir(), t.TempDir()
	ctx := context.Background()
	m := openManager(t, data, root)
	if err := m.Apply(ctx, spec("3", file("/etc/a", "a", 0))); err != nil {
		t.Fatalf("Apply 3: %v", err)
	}
	if err := m.Apply(ctx, spec("4", file("/etc/a", "bad", 0o20000))); err == nil {
		t.Fatal("Apply 4 succeeded, want an error")
	}
	// A local edit shows whether the restart writes the file again.
	if err := os.WriteFile(filepath.Join(root, "etc/a"), []byte("edited"), 0o644); err != nil {
		t.Fatal(err)
	}

	again := openManager(t, data, root)

	if diff := cmp.Diff(m.Versions(), again.Versions()); diff != "" {
		t.Errorf("Versions after restart (-before +after):\n%s", diff)
	}
	if got := again.Versions().Highest(); got != "4" {
		t.Errorf("Highest = %q, want 4", got)
	}
	if got := readFile(t, filepath.Join(root, "etc/a")); got != "edited" {
		t.Errorf("restart re-applied the spec: file = %q", got)
	}
	if err := again.Apply(ctx, spec("5", file("/etc/b", "b", 0))); err != nil {
		t.Fatalf("Apply 5: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/a")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("file list of version 3 was lost: etc/a still exists (stat err %v)", err)
	}
}

// writeInterruptedState leaves a state file as a process that died while applying desired.
func writeInterruptedState(t *testing.T, data string, m *Manager, desired *fleetplanev1.RenderedDeviceSpec) {
	t.Helper()
	s := m.state
	s.desired = desired
	if err := saveState(filepath.Join(data, StateFileName), s); err != nil {
		t.Fatal(err)
	}
}

func TestRecoverReappliesDesired(t *testing.T) {
	root, data := t.TempDir(), t.TempDir()
	m := openManager(t, data, root)
	if err := m.Apply(context.Background(), spec("1", file("/a", "a1", 0), file("/b", "b1", 0))); err != nil {
		t.Fatalf("Apply 1: %v", err)
	}
	// The interrupted apply had written a but not b.
	if err := os.WriteFile(filepath.Join(root, "a"), []byte("a2"), 0o644); err != nil {
		t.Fatal(err)
	}
	writeInterruptedState(t, data, m, spec("2", file("/a", "a2", 0), file("/c", "c2", 0)))

	again := openManager(t, data, root)

	if got := again.Versions().Applied; got != "2" {
		t.Errorf("Applied = %q, want 2", got)
	}
	if got := readFile(t, filepath.Join(root, "c")); got != "c2" {
		t.Errorf("c = %q, want c2", got)
	}
	if _, err := os.Stat(filepath.Join(root, "b")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("b of version 1 still exists (stat err %v)", err)
	}
}

func TestRecoverRestoresCurrent(t *testing.T) {
	root, data := t.TempDir(), t.TempDir()
	m := openManager(t, data, root)
	if err := m.Apply(context.Background(), spec("1", file("/a", "a1", 0))); err != nil {
		t.Fatalf("Apply 1: %v", err)
	}
	if err := os.WriteFile(filepath.Join(root, "a"), []byte("half-applied"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "blocker"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	writeInterruptedState(t, data, m, spec("2", file("/a", "a2", 0), file("/blocker/x", "x", 0)))

	again := openManager(t, data, root)

	want := Versions{Applied: "1", Rejected: "2", RejectedError: again.Versions().RejectedError}
	if diff := cmp.Diff(want, again.Versions()); diff != "" {
		t.Errorf("Versions (-want +got):\n%s", diff)
	}
	if got := readFile(t, filepath.Join(root, "a")); got != "a1" {
		t.Errorf("a = %q, want the current spec's a1", got)
	}
	if again.state.desired != nil {
		t.Error("desired spec kept after recovery")
	}
}

func TestCompareVersions(t *testing.T) {
	cases := []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"", "1", -1},
		{"2", "10", -1},
		{"10", "9", 1},
		{"7", "7", 0},
		{"v2", "v10", -1},
		{"b", "a", 1},
	}
	for _, c := range cases {
		if got := CompareVersions(c.a, c.b); got != c.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}

func TestMemoryRejectsAndIgnores(t *testing.T) {
	m := &Memory{Fail: func(s *fleetplanev1.RenderedDeviceSpec) error {
		if s.GetRenderedVersion() == "3" {
			return errors.New("boom")
		}
		return nil
	}}
	ctx := context.Background()

	if err := m.Apply(ctx, spec("2")); err != nil {
		t.Fatalf("Apply 2: %v", err)
	}
	if err := m.Apply(ctx, spec("3")); err == nil {
		t.Error("Apply 3 succeeded, want an error")
	}
	if err := m.Apply(ctx, spec("3")); !errors.Is(err, ErrNotNewer) {
		t.Errorf("Apply 3 again error = %v, want ErrNotNewer", err)
	}

	want := Versions{Applied: "2", Rejected: "3", RejectedError: "boom"}
	if diff := cmp.Diff(want, m.Versions()); diff != "" {
		t.Errorf("Versions (-want +got):\n%s", diff)
	}
	if !m.Versions().LastRejected() {
		t.Error("LastRejected = false, want true")
	}
}

func TestApplySetsOwnerWhenRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("setting a file's owner needs root")
	}
	root := t.TempDir()
	m := openManager(t, t.TempDir(), root)
	owned := file("/owned", "o", 0)
	owned.User, owned.Group = "nobody", "root"
	unknown := file("/unknown", "u", 0)
	unknown.User = "no-such-user-fleetplane"

	if err := m.Apply(context.Background(), spec("1", owned, unknown)); err != nil {
		t.Fatalf("Apply: %v", err)
	}

	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody on this host: %v", err)
	}
	info, err := os.Stat(filepath.Join(root, "owned"))
	if err != nil {
		t.Fatal(err)
	}
	st := info.Sys().(*syscall.Stat_t)
	if got := strconv.Itoa(int(st.Uid)); got != nobody.Uid {
		t.Errorf("owner uid = %s, want %s (nobody)", got, nobody.Uid)
	}
	if st.Gid != 0 {
		t.Errorf("group gid = %d, want 0 (root)", st.Gid)
	}
	if got := readFile(t, filepath.Join(root, "unknown")); got != "u" {
		t.Errorf("file with an unknown user = %q, want it written", got)
	}
}
