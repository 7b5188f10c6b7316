package testupstream

// Multipart endpoints: audio transcriptions and file uploads. Both stream the
// file part and only count its bytes, so uploads of any size use constant
// memory; files keep their metadata (never their contents) for listing.

import (
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/airlock-proxy/airlock/internal/apierror"
)

// maxFormField bounds a non-file multipart field ("model", "purpose", ...).
const maxFormField = 64 << 10

// maxFiles is how many uploaded files' metadata the server keeps; the
// oldest are forgotten first.
const maxFiles = 10000

// form is a parsed multipart request: the file part's name and size, and
// the other fields' values.
type form struct {
	hasFile  bool
	filename string
	bytes    int64
	fields   map[string]string
}

// readForm streams r's multipart body: the part named "file" is counted and
// discarded, other parts are kept as fields. On failure it answers 400 and
// returns false.
func readForm(w http.ResponseWriter, r *http.Request) (*form, bool) {
	mr, err := r.MultipartReader()
	if err != nil {
		badRequest(w, "", "expected a multipart/form-data body: "+err.Error())
		return nil, false
	}
	f := &form{fields: make(map[string]string)}
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			// Drain any epilogue so net/http watches for the client going away.
			_, _ = io.Copy(io.Discard, r.Body)
			return f, true
		}
		if err != nil {
			badRequest(w, "", "reading multipart body: "+err.Error())
			return nil, false
		}
		if ok := f.add(w, p); !ok {
			return nil, false
		}
	}
}

func (f *form) add(w http.ResponseWriter, p *multipart.Part) bool {
	defer p.Close()
	name := p.FormName()
	if name == "file" {
		n, err := io.Copy(io.Discard, p)
		if err != nil {
			badRequest(w, "file", "reading file part: "+err.Error())
			return false
		}
		f.hasFile, f.filename, f.bytes = true, p.FileName(), n
		return true
	}
	b, err := io.ReadAll(io.LimitReader(p, maxFormField+1))
	if err != nil {
		badRequest(w, name, "reading form field: "+err.Error())
		return false
	}
	if len(b) > maxFormField {
		badRequest(w, name, fmt.Sprintf("form field %q longer than %d bytes", name, maxFormField))
		return false
	}
	f.fields[name] = string(b)
	return true
}

// TranscriptionText is the text of the transcription of a file of n bytes
// named filename.
func TranscriptionText(n int64, filename string) string {
	return fmt.Sprintf("transcribed %d bytes from %s", n, filename)
}

func (s *Server) transcriptions(w http.ResponseWriter, r *http.Request) {
	f, ok := readForm(w, r)
	if !ok {
		return
	}
	if !f.hasFile {
		badRequest(w, "file", "you must provide a file")
		return
	}
	if !requireModel(w, f.fields["model"]) {
		return
	}
	text := TranscriptionText(f.bytes, f.filename)
	switch format := f.fields["response_format"]; format {
	case "", "json":
		writeJSON(w, http.StatusOK, struct {
			Text string `json:"text"`
		}{text})
	case "verbose_json":
		writeJSON(w, http.StatusOK, struct {
			Task     string  `json:"task"`
			Language string  `json:"language"`
			Duration float64 `json:"duration"`
			Text     string  `json:"text"`
		}{"transcribe", "english", 0, text})
	case "text", "srt", "vtt":
		b := []byte(text + "\n")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		_, _ = w.Write(b)
	default:
		badRequest(w, "response_format", fmt.Sprintf("unsupported response_format %q", format))
	}
}

// fileObject is an OpenAIFile.
type fileObject struct {
	ID        string `json:"id"`
	Object    string `json:"object"`
	Bytes     int64  `json:"bytes"`
	CreatedAt int64  `json:"created_at"`
	Filename  string `json:"filename"`
	Purpose   string `json:"purpose"`
	Status    string `json:"status"`
}

// fileStore keeps uploaded files' metadata in upload order.
type fileStore struct {
	mu    sync.Mutex
	byID  map[string]*fileObject
	order []string // IDs, oldest first
}

func (fs *fileStore) add(f *fileObject) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if len(fs.order) >= maxFiles {
		delete(fs.byID, fs.order[0])
		fs.order = slices.Delete(fs.order, 0, 1)
	}
	fs.byID[f.ID] = f
	fs.order = append(fs.order, f.ID)
}

func (fs *fileStore) get(id string) (fileObject, bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	f, ok := fs.byID[id]
	if !ok {
		return fileObject{}, false
	}
	return *f, true
}

func (fs *fileStore) remove(id string) bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if _, ok := fs.byID[id]; !ok {
		return false
	}
	delete(fs.byID, id)
	fs.order = slices.DeleteFunc(fs.order, func(x string) bool { return x == id })
	return true
}

// list returns files with purpose ("" = any), newest first unless asc,
// starting after the file after ("" = from the start), at most limit.
func (fs *fileStore) list(purpose string, asc bool, after string, limit int) (files []fileObject, more bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	ids := slices.Clone(fs.order)
	if !asc {
		slices.Reverse(ids)
	}
	if after != "" {
		i := slices.Index(ids, after)
		ids = ids[i+1:] // an unknown cursor (i == -1) lists from the start
	}
	for _, id := range ids {
		f := fs.byID[id]
		if purpose != "" && f.Purpose != purpose {
			continue
		}
		if len(files) == limit {
			return files, true
		}
		files = append(files, *f)
	}
	return files, false
}

func (s *Server) uploadFile(w http.ResponseWriter, r *http.Request) {
	f, ok := readForm(w, r)
	if !ok {
		return
	}
	if !f.hasFile {
		badRequest(w, "file", "you must provide a file")
		return
	}
	purpose := f.fields["purpose"]
	if purpose == "" {
		badRequest(w, "purpose", "you must provide a purpose")
		return
	}
	obj := &fileObject{
		ID: "file-" + randomHex(12), Object: "file", Bytes: f.bytes,
		CreatedAt: time.Now().Unix(), Filename: f.filename, Purpose: purpose, Status: "processed",
	}
	s.files.add(obj)
	writeJSON(w, http.StatusOK, obj)
}

func (s *Server) listFiles(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := maxFiles
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxFiles {
			badRequest(w, "limit", fmt.Sprintf("limit must be from 1 to %d", maxFiles))
			return
		}
		limit = n
	}
	order := q.Get("order")
	if order != "" && order != "asc" && order != "desc" {
		badRequest(w, "order", `order must be "asc" or "desc"`)
		return
	}
	files, more := s.files.list(q.Get("purpose"), order == "asc", q.Get("after"), limit)
	if files == nil {
		files = []fileObject{}
	}
	resp := struct {
		Object  string       `json:"object"`
		Data    []fileObject `json:"data"`
		FirstID *string      `json:"first_id"`
		LastID  *string      `json:"last_id"`
		HasMore bool         `json:"has_more"`
	}{Object: "list", Data: files, HasMore: more}
	if len(files) > 0 {
		resp.FirstID, resp.LastID = &files[0].ID, &files[len(files)-1].ID
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) getFile(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	f, ok := s.files.get(id)
	if !ok {
		fileNotFound(w, id)
		return
	}
	writeJSON(w, http.StatusOK, f)
}

func (s *Server) deleteFile(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !s.files.remove(id) {
		fileNotFound(w, id)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Deleted bool   `json:"deleted"`
	}{id, "file", true})
}

func fileNotFound(w http.ResponseWriter, id string) {
	writeError(w, http.StatusNotFound, apierror.TypeInvalidRequest, "not_found", "id",
		fmt.Sprintf("airlock test upstream: no such file: %s", id))
}
