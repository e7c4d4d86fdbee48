package resourcefile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// endless is a reader that never ends, like /dev/zero.
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	return len(p), nil
}

func TestLoadEndlessInput(t *testing.T) {
	_, err := Load([]string{"-"}, endless{})
	if err == nil {
		t.Fatal("Load of endless standard input returned no error")
	}
	if !strings.Contains(err.Error(), "standard input") {
		t.Errorf("error %q does not name standard input", err)
	}
	if !strings.Contains(err.Error(), "MiB") {
		t.Errorf("error %q does not state the limit", err)
	}
}

func TestLoadFileTooLarge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.yaml")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	// A sparse file: the size is set without writing the bytes.
	if err := f.Truncate(MaxFileBytes + 1); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	_, err = Load([]string{path}, nil)
	if err == nil {
		t.Fatal("Load of an oversized file returned no error")
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name the file", err)
	}
	if !strings.Contains(err.Error(), "split it") {
		t.Errorf("error %q does not say what to do", err)
	}
}
