package apply

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultFileMode is the mode of a file whose spec gives mode 0.
const DefaultFileMode fs.FileMode = 0o644

// tempPrefix starts the names of temporary files, so that a leftover one is easy to recognise.
const tempPrefix = ".fleetplane-tmp-"

// CleanPath checks a spec file path and returns it in canonical form ("/etc/app.conf"). A path
// is relative to the agent's root directory whether or not it starts with "/". It must not be
// empty, contain a NUL byte or a ".." element, or name the root itself.
func CleanPath(p string) (string, error) {
	if p == "" {
		return "", errors.New("path is empty: give the file's path below the root directory")
	}
	if strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("path %q contains a NUL byte", p)
	}
	for _, elem := range strings.Split(filepath.ToSlash(p), "/") {
		if elem == ".." {
			return "", fmt.Errorf("path %q escapes the root directory: remove the \"..\" elements", p)
		}
	}
	clean := filepath.Clean("/" + p)
	if clean == "/" {
		return "", fmt.Errorf("path %q names the root directory, not a file", p)
	}
	return clean, nil
}

// fileMode converts a spec mode to permission bits, with 0 meaning DefaultFileMode.
func fileMode(mode int32) (fs.FileMode, error) {
	if mode == 0 {
		return DefaultFileMode, nil
	}
	if mode < 0 || mode > 0o7777 {
		return 0, fmt.Errorf("mode %#o is invalid: use permission bits between 0 and 07777", mode)
	}
	m := fs.FileMode(mode & 0o777)
	if mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m, nil
}

// backup is the state of one path before a transaction changed it.
type backup struct {
	path    string
	existed bool
	content []byte
	mode    fs.FileMode
}

// transaction changes files under a root directory and keeps a backup of each path it
// touches, so that rollback can restore them all.
type transaction struct {
	root     string
	realRoot string
	log      *slog.Logger
	backups  []backup
	dirs     map[string]bool
}

func newTransaction(root string, log *slog.Logger) (*transaction, error) {
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil, fmt.Errorf("resolve root directory: %w", err)
	}
	return &transaction{root: root, realRoot: realRoot, log: log, dirs: map[string]bool{}}, nil
}

// target returns the host path of a clean spec path, after it has created the parent
// directories and checked that no symbolic link leads the parent outside the root.
func (t *transaction) target(clean string) (string, error) {
	full := filepath.Join(t.root, clean)
	dir := filepath.Dir(full)
	// NOTE: directories created here stay in place when the transaction rolls back.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create directory for %s: %w", clean, err)
	}
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", fmt.Errorf("resolve directory of %s: %w", clean, err)
	}
	if realDir != t.realRoot && !strings.HasPrefix(realDir, t.realRoot+string(filepath.Separator)) {
		return "", fmt.Errorf("path %s escapes the root directory through a symbolic link", clean)
	}
	return full, nil
}

// save records the current state of full before the transaction changes it.
func (t *transaction) save(clean, full string) error {
	info, err := os.Lstat(full)
	if errors.Is(err, fs.ErrNotExist) {
		t.backups = append(t.backups, backup{path: full})
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect %s: %w", clean, err)
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("%s exists and is not a regular file (%s): remove it or pick another path",
			clean, info.Mode().Type())
	}
	content, err := os.ReadFile(full)
	if err != nil {
		return fmt.Errorf("back up %s: %w", clean, err)
	}
	t.backups = append(t.backups, backup{
		path: full, existed: true, content: content, mode: info.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky),
	})
	return nil
}

// write replaces the file at clean with content, keeping a backup of what was there.
func (t *transaction) write(clean string, content []byte, mode fs.FileMode, owner, group string) error {
	full, err := t.target(clean)
	if err != nil {
		return err
	}
	if err := t.save(clean, full); err != nil {
		return err
	}
	chown := func(f *os.File) error { return t.chown(f.Name(), clean, owner, group) }
	if err := writeAtomic(full, content, mode, chown); err != nil {
		return fmt.Errorf("write %s: %w", clean, err)
	}
	t.dirs[filepath.Dir(full)] = true
	return nil
}

// remove deletes the file at clean, keeping a backup of it.
func (t *transaction) remove(clean string) error {
	full := filepath.Join(t.root, clean)
	if _, err := os.Lstat(full); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if _, err := t.target(clean); err != nil {
		return err
	}
	if err := t.save(clean, full); err != nil {
		return err
	}
	if err := os.Remove(full); err != nil {
		return fmt.Errorf("remove %s: %w", clean, err)
	}
	t.dirs[filepath.Dir(full)] = true
	return nil
}

// rollback restores every path the transaction changed, newest change first.
func (t *transaction) rollback() error {
	var errs []error
	for i := len(t.backups) - 1; i >= 0; i-- {
		b := t.backups[i]
		if !b.existed {
			if err := os.Remove(b.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove %s: %w", b.path, err))
			}
			continue
		}
		// NOTE: the restored file gets its old content and mode but the agent's owner.
		if err := writeAtomic(b.path, b.content, b.mode, nil); err != nil {
			errs = append(errs, fmt.Errorf("restore %s: %w", b.path, err))
		}
	}
	t.backups = nil
	if len(errs) > 0 {
		return fmt.Errorf("roll back: %w", errors.Join(errs...))
	}
	return nil
}

// commit syncs the directories whose entries changed, so that the renames are durable.
func (t *transaction) commit() error {
	for dir := range t.dirs {
		if err := syncDir(dir); err != nil {
			return err
		}
	}
	return nil
}

// chown sets the owner of the file at name when the agent runs as root and both names
// resolve on this host.
//
// NOTE: without root, or when the user or group is unknown here, the file keeps the agent's
// owner and only a debug log records it.
func (t *transaction) chown(name, clean, owner, group string) error {
	if owner == "" && group == "" {
		return nil
	}
	if os.Geteuid() != 0 {
		t.log.Debug("file owner not set: agent does not run as root", "path", clean, "user", owner, "group", group)
		return nil
	}
	uid, gid := -1, -1
	if owner != "" {
		u, err := user.Lookup(owner)
		if err != nil {
			t.log.Debug("file owner not set: unknown user", "path", clean, "user", owner, "err", err)
			return nil
		}
		uid, _ = strconv.Atoi(u.Uid)
	}
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			t.log.Debug("file group not set: unknown group", "path", clean, "group", group, "err", err)
			return nil
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	return os.Lchown(name, uid, gid)
}

// writeAtomic writes content to a temporary file in the directory of path, syncs it, sets its
// mode, calls prepare (if not nil) and renames it over path.
func writeAtomic(path string, content []byte, mode fs.FileMode, prepare func(*os.File) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), tempPrefix+"*")
	if err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()

	if _, err := tmp.Write(content); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		return err
	}
	if prepare != nil {
		if err := prepare(tmp); err != nil {
			return err
		}
	}
	if err := tmp.Close(); err != nil {
		return err
	}

	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	done = true
	return nil
}

// WriteFileAtomic replaces the file at path with content and the given mode so that a reader
// sees either the old or the new content, and syncs the file and its directory.
func WriteFileAtomic(path string, content []byte, mode fs.FileMode) error {
	if err := writeAtomic(path, content, mode, nil); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
