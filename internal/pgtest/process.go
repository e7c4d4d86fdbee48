package pgtest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// errSkip marks a start failure that means the environment lacks PostgreSQL, as opposed to a
// server that failed to start.
var errSkip = errors.New("pgtest: PostgreSQL unavailable")

// Timeouts for the server's life cycle.
const (
	initTimeout     = 2 * time.Minute
	readyTimeout    = 30 * time.Second
	shutdownTimeout = 10 * time.Second
)

// dirPrefix names the temporary directories of throw-away servers, so that a later run can
// find and remove the ones left by a test binary that crashed.
const dirPrefix = "fleetplane-pgtest-"

// process is one running postmaster and the directory it owns.
type process struct {
	dir  string
	port int
	cmd  *exec.Cmd
	// logPath is the postmaster's standard error, read back when it fails to start.
	logPath string
	done    chan struct{} // closed when the postmaster has exited
}

// findBinDir returns the directory that holds both initdb and postgres: BinDirEnv if set,
// else the newest /usr/lib/postgresql/<version>/bin, else the directory of initdb on PATH.
func findBinDir() (string, error) {
	var candidates []string
	if dir := os.Getenv(BinDirEnv); dir != "" {
		candidates = []string{dir}
	} else {
		found, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
		sort.Slice(found, func(i, j int) bool { return majorOf(found[i]) > majorOf(found[j]) })
		candidates = found
		if p, err := exec.LookPath("initdb"); err == nil {
			candidates = append(candidates, filepath.Dir(p))
		}
	}
	missing := "initdb"
	for _, dir := range candidates {
		missing = ""
		for _, name := range []string{"initdb", "postgres"} {
			if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
				missing = name
				break
			}
		}
		if missing == "" {
			return dir, nil
		}
	}
	where := "/usr/lib/postgresql/*/bin or PATH"
	if dir := os.Getenv(BinDirEnv); dir != "" {
		where = dir + " (" + BinDirEnv + ")"
	}
	return "", fmt.Errorf("%w: binary %s not found in %s; install the postgresql package "+
		"(.ci/run does) to run these tests", errSkip, missing, where)
}

// majorOf returns the major version in a path like /usr/lib/postgresql/15/bin.
func majorOf(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// serverCredential returns the credential to run initdb and postgres with: nil when the test
// runs as an ordinary user, and the postgres system user when it runs as root, because both
// programs exit with an error when run as root.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("%w: tests run as root, where initdb and postgres do not run, "+
			"and the postgres system user to run them as was not found: %v", errSkip, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("pgtest: user postgres has a non-numeric uid %q or gid %q",
			u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// makeDir creates the server's temporary directory, owned by cred's user when set, and
// records this process's id in it for removeStaleDirs.
func makeDir(cred *syscall.Credential) (string, error) {
	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return "", fmt.Errorf("pgtest: create temporary directory: %w", err)
	}
	pidFile := filepath.Join(dir, "owner.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("pgtest: write %s: %w", pidFile, err)
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("pgtest: give %s to user postgres: %w", dir, err)
		}
	}
	return dir, nil
}

// removeStaleDirs deletes the directories of servers whose test binary is gone. A binary
// that panics or is killed cannot clean up. Its postmaster dies with it (see startPostgres),
// but the directory stays until this runs.
func removeStaleDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "owner.pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(dir)
		}
	}
}

// initDB creates a database cluster in dir/data whose superuser is postgres, with trust
// authentication because the server listens only on 127.0.0.1 and a private socket directory.
func initDB(binDir, dir string, cred *syscall.Credential) error {
	ctx, cancel := context.WithTimeout(context.Background(), initTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "initdb"),
		"--pgdata", filepath.Join(dir, "data"), "--username", superuser, "--auth", "trust",
		"--encoding", "UTF8", "--no-locale", "--no-sync")
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true,
		Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgtest: initdb failed: %w\n%s", err, out)
	}
	return nil
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago. Another process may
// take it before postgres binds it, so start retries with a new port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startPostgres starts the postmaster on port in its own process group. The kernel kills it
// with SIGKILL when the thread that started it exits (Pdeathsig). That thread is locked to a
// goroutine that lives until the postmaster exits, so the signal fires only when the test
// binary itself dies: after a panic, a test timeout or a kill. The backends notice that
// their postmaster died and exit as well.
func startPostgres(binDir, dir string, port int, cred *syscall.Credential) (*process, error) {
	args := []string{
		"-D", filepath.Join(dir, "data"),
		"-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=" + dir,
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		"-c", "max_connections=" + strconv.Itoa(maxConnections),
		"-c", "log_min_messages=warning",
	}
	p := &process{dir: dir, port: port, done: make(chan struct{}),
		logPath: filepath.Join(dir, fmt.Sprintf("postgres-%d.log", port))}
	logFile, err := os.Create(p.logPath)
	if err != nil {
		return nil, fmt.Errorf("pgtest: create postgres log: %w", err)
	}
	defer logFile.Close() // the child keeps its own descriptor
	p.cmd = exec.Command(filepath.Join(binDir, "postgres"), args...)
	p.cmd.Dir = dir
	p.cmd.Stdout = logFile
	p.cmd.Stderr = logFile
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true,
		Pdeathsig: syscall.SIGKILL}

	started := make(chan error, 1)
	go func() {
		// The thread stays locked and alive until Wait returns; see the function comment.
		runtime.LockOSThread()
		if err := p.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = p.cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("pgtest: start postgres: %w", err)
	}
	return p, nil
}

// logTail returns the end of the postmaster's log, for error messages.
func (p *process) logTail() string {
	b, _ := os.ReadFile(p.logPath)
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// exited reports whether the postmaster has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop shuts the postmaster down (SIGINT: fast shutdown, which disconnects clients), and
// kills its whole process group if it is still running after shutdownTimeout.
func (p *process) stop() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(shutdownTimeout):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	// Backends that outlived a postmaster killed above belong to the same group.
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
}

// removeDir deletes the server's directory. Files that postgres created are owned by the
// postgres user, which root may delete.
func removeDir(dir string) error {
	err := os.RemoveAll(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("pgtest: remove %s: %w", dir, err)
	}
	return nil
}
