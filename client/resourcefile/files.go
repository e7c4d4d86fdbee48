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

func readSource(file string, stdin io.Reader) ([]byte, error) {
	if file != "-" {
		return os.ReadFile(file)
	}
	if stdin == nil {
		return nil, errors.New("read standard input: no input is attached")
	}
	data, err := io.ReadAll(stdin)
	if err != nil {
		return nil, fmt.Errorf("read standard input: %w", err)
	}
	return data, nil
}
