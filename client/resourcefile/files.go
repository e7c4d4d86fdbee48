package resourcefile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Load parses every document of the given paths. A path is a file, "-" for stdin, or a
// directory. Load reads a directory's *.yaml, *.yml and *.json files in name order, without
// descending into subdirectories. Like Parse, it returns the documents that parsed and the
// joined errors of those that did not.
func Load(paths []string, stdin io.Reader) ([]*Document, error) {
	var docs []*Document
	var errs []error
	for _, path := range paths {
		files, err := expand(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, file := range files {
			data, err := readSource(file, stdin)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			parsed, err := Parse(file, data)
			docs = append(docs, parsed...)
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	return docs, errors.Join(errs...)
}

func expand(path string) ([]string, error) {
	if path == "-" {
		return []string{path}, nil
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if !info.IsDir() {
		return []string{path}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, fmt.Errorf("read directory %s: %w", path, err)
	}
	var files []string
	for _, e := range entries {
		switch strings.ToLower(filepath.Ext(e.Name())) {
		case ".yaml", ".yml", ".json":
			if !e.IsDir() {
				files = append(files, filepath.Join(path, e.Name()))
			}
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("directory %s has no .yaml, .yml or .json files", path)
	}
	sort.Strings(files)
	return files, nil
}

// MaxFileBytes is the largest file or standard input that Load reads. It is four times
// MaxRequestBytes, because a file may contain many documents, and it keeps an endless source
// such as /dev/zero from filling the memory.
const MaxFileBytes = 16 << 20

// MaxRequestBytes is the server's limit on one request message, server.MaxRequestBytes. Every
// object is sent in a request of its own, so Parse rejects an object whose create or update
// request would be larger.
const MaxRequestBytes = 4 << 20

func readSource(file string, stdin io.Reader) ([]byte, error) {
	name := file
	var src io.Reader
	if file == "-" {
		name = "standard input"
		if stdin == nil {
			return nil, errors.New("read standard input: no input is attached")
		}
		src = stdin
	} else {
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		src = f
	}
	data, err := io.ReadAll(io.LimitReader(src, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("read %s: larger than %d MiB; split it into several files",
			name, MaxFileBytes>>20)
	}
	return data, nil
}
