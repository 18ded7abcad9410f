// The Go reference for cocos-manifest's tests: encoding/json and
// archive/zip used the way agent-api.md §2.2 and §2.3 describe the Go CLI
// using them. Standard library only.
//
//	go run go_reference.go json FILE...   one line per file: "ok <hex of json.Marshal(json.Unmarshal(FILE))>" or "err <message>"
//	go run go_reference.go zip DIR        the deterministic zip of DIR on stdout
//	go run go_reference.go unzip FILE     one line per entry: name, mode, mtime, SHA-256 of the content
package main

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"
)

type ResourceSource struct {
	Type            string `json:"type,omitempty"`
	URL             string `json:"url,omitempty"`
	KBSResourcePath string `json:"kbs_resource_path,omitempty"`
	Encrypted       bool   `json:"encrypted,omitempty"`
}

type KBSConfig struct {
	URL     string `json:"url,omitempty"`
	Enabled bool   `json:"enabled,omitempty"`
}

type Dataset struct {
	Dataset    []byte          `json:"-"`
	Hash       [32]byte        `json:"hash,omitempty"`
	UserKey    []byte          `json:"user_key,omitempty"`
	Filename   string          `json:"filename,omitempty"`
	Source     *ResourceSource `json:"source,omitempty"`
	Decompress bool            `json:"decompress,omitempty"`
	KBS        *KBSConfig      `json:"kbs,omitempty"`
}

type Algorithm struct {
	Algorithm    []byte          `json:"-"`
	Hash         [32]byte        `json:"hash,omitempty"`
	UserKey      []byte          `json:"user_key,omitempty"`
	Requirements []byte          `json:"-"`
	Source       *ResourceSource `json:"source,omitempty"`
	AlgoType     string          `json:"algo_type,omitempty"`
	AlgoArgs     []string        `json:"algo_args,omitempty"`
	KBS          *KBSConfig      `json:"kbs,omitempty"`
	// Ours, not the Go agent's: requirements.txt's SHA3-256.
	RequirementsHash *[32]byte `json:"requirements_hash,omitempty"`
}

type ResultConsumer struct {
	UserKey []byte `json:"user_key,omitempty"`
}

type Computation struct {
	ID              string           `json:"id,omitempty"`
	Name            string           `json:"name,omitempty"`
	Description     string           `json:"description,omitempty"`
	Datasets        []Dataset        `json:"datasets,omitempty"`
	Algorithm       *Algorithm       `json:"algorithm,omitempty"`
	ResultConsumers []ResultConsumer `json:"result_consumers,omitempty"`
}

func main() {
	switch os.Args[1] {
	case "json":
		for _, f := range os.Args[2:] {
			in, err := os.ReadFile(f)
			if err != nil {
				panic(err)
			}
			var c Computation
			if err := json.Unmarshal(in, &c); err != nil {
				fmt.Printf("err %v\n", err)
				continue
			}
			out, err := json.Marshal(c)
			if err != nil {
				panic(err)
			}
			fmt.Printf("ok %s\n", hex.EncodeToString(out))
		}
	case "zip":
		os.Stdout.Write(zipDir(os.Args[2]))
	case "unzip":
		r, err := zip.OpenReader(os.Args[2])
		if err != nil {
			panic(err)
		}
		for _, f := range r.File {
			rc, err := f.Open()
			if err != nil {
				panic(err)
			}
			h := sha256.New()
			if _, err := io.Copy(h, rc); err != nil {
				panic(err)
			}
			fmt.Printf("%s %v %d %x\n", f.Name, f.Mode(), f.Modified.Unix(), h.Sum(nil))
		}
	}
}

// zipDir: every non-directory under dir, sorted, each with
// zip.FileInfoHeader(os.Stat), Name = relative path, Modified = Unix epoch.
func zipDir(dir string) []byte {
	var files []string
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !info.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		panic(err)
	}
	sort.Strings(files)
	buf := new(bytes.Buffer)
	w := zip.NewWriter(buf)
	for _, p := range files {
		info, err := os.Stat(p)
		if err != nil {
			panic(err)
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			panic(err)
		}
		h, err := zip.FileInfoHeader(info)
		if err != nil {
			panic(err)
		}
		h.Name = rel
		h.Modified = time.Unix(0, 0)
		fw, err := w.CreateHeader(h)
		if err != nil {
			panic(err)
		}
		f, err := os.Open(p)
		if err != nil {
			panic(err)
		}
		if _, err := io.Copy(fw, f); err != nil {
			panic(err)
		}
		f.Close()
	}
	if err := w.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}
