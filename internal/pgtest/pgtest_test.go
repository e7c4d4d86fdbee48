package pgtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) {
	if os.Getenv(orphanChildEnv) != "" {
		runOrphanChild()
		return
	}
	Main(m)
}

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("connect to %s: %v", dsn, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestSharedServerSettings(t *testing.T) {
	t.Parallel()
	conn := connect(t, Shared(t).NewDatabase(t))
	want := map[string]string{
		"fsync":              "off",
		"synchronous_commit": "off",
		"listen_addresses":   "127.0.0.1",
	}
	for name, value := range want {
		var got string
		if err := conn.QueryRow(t.Context(), "SHOW "+name).Scan(&got); err != nil {
			t.Fatalf("SHOW %s: %v", name, err)
		}
		if got != value {
			t.Errorf("%s = %q; want %q", name, got, value)
		}
	}
}

func TestNewDatabaseIsolated(t *testing.T) {
	t.Parallel()
	s := Shared(t)
	first := connect(t, s.NewDatabase(t))
	second := connect(t, s.NewDatabase(t))
	if _, err := first.Exec(t.Context(), "CREATE TABLE only_here (id int)"); err != nil {
		t.Fatalf("create table: %v", err)
	}
	var n int
	err := second.QueryRow(t.Context(),
		"SELECT count(*) FROM pg_tables WHERE tablename = 'only_here'").Scan(&n)
	if err != nil {
		t.Fatalf("query pg_tables: %v", err)
	}
	if n != 0 {
		t.Errorf("table created in one database is visible in another")
	}
}

func TestNewDatabaseDroppedAfterTest(t *testing.T) {
	t.Parallel()
	s := Shared(t)
	var name string
	t.Run("inner", func(t *testing.T) {
		conn := connect(t, s.NewDatabase(t))
		if err := conn.QueryRow(t.Context(), "SELECT current_database()").Scan(&name); err != nil {
			t.Fatalf("current_database: %v", err)
		}
	})
	var n int
	err := s.admin.QueryRow(t.Context(),
		"SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n)
	if err != nil {
		t.Fatalf("query pg_database: %v", err)
	}
	if name == "" || n != 0 {
		t.Errorf("database %q still exists after its test ended", name)
	}
}

func TestStartStopRemovesDir(t *testing.T) {
	s := Start(t)
	conn := connect(t, s.DSN("postgres"))
	var one int
	if err := conn.QueryRow(t.Context(), "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 = %d, %v", one, err)
	}
	conn.Close(t.Context())
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !s.proc.exited() {
		t.Errorf("postmaster still running after Stop")
	}
	if _, err := os.Stat(s.proc.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("directory %s still exists after Stop: %v", s.proc.dir, err)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestMissingBinarySkips(t *testing.T) {
	t.Setenv(BinDirEnv, t.TempDir())
	_, err := findBinDir()
	if !errors.Is(err, errSkip) {
		t.Fatalf("findBinDir with an empty directory: error = %v; want errSkip", err)
	}
	for _, want := range []string{"initdb", BinDirEnv, "postgresql package"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("skip message %q does not mention %q", err, want)
		}
	}
}

// orphanChildEnv makes the test binary start a server, print the postmaster's pid and wait
// to be killed, for TestKilledBinaryLeavesNoServer.
const orphanChildEnv = "PGTEST_ORPHAN_CHILD"

func runOrphanChild() {
	s, err := start()
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Printf("pid %d dir %s\n", s.proc.cmd.Process.Pid, s.proc.dir)
	select {}
}

func TestKilledBinaryLeavesNoServer(t *testing.T) {
	Shared(t) // skips when PostgreSQL is unavailable
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), orphanChildEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("stdout pipe: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("read child output: %v", err)
	}
	var pid int
	var dir string
	if _, err := fmt.Sscanf(line, "pid %d dir %s", &pid, &dir); err != nil {
		t.Fatalf("child printed %q: %v", line, err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })

	if err := cmd.Process.Kill(); err != nil {
		t.Fatalf("kill child: %v", err)
	}
	_ = cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			t.Fatalf("postmaster %d survived its killed test binary", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}

	removeStaleDirs()
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("removeStaleDirs left %s of a dead binary: %v", dir, err)
	}
}

// alive reports whether pid names a running process that is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses: "123 (postgres) S ...".
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}
