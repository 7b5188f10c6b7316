package testupstream

// Models and embeddings: a fixed model list, and embedding vectors derived
// from a hash of each input so they are the same on every run.

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"

	"github.com/airlock-proxy/airlock/internal/apierror"
)

// Models are the model IDs GET /v1/models lists. Chat, completion and
// embedding requests accept any model name; only DieMidstreamModel behaves
// differently.
var Models = []string{"airlock-test-1", "gpt-4o-mini", "text-embedding-3-small", "whisper-1", DieMidstreamModel}

// modelCreated is the "created" time of every listed model.
const modelCreated = 1700000000

// DefaultEmbeddingDimensions is the vector length when a request sets no
// "dimensions".
const DefaultEmbeddingDimensions = 8

// maxEmbeddingDimensions bounds "dimensions".
const maxEmbeddingDimensions = 4096

type model struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func newModel(id string) model {
	return model{ID: id, Object: "model", Created: modelCreated, OwnedBy: "airlock"}
}

func (s *Server) listModels(w http.ResponseWriter, r *http.Request) {
	data := make([]model, len(Models))
	for i, id := range Models {
		data[i] = newModel(id)
	}
	writeJSON(w, http.StatusOK, struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{"list", data})
}

func (s *Server) getModel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	for _, m := range Models {
		if m == id {
			writeJSON(w, http.StatusOK, newModel(id))
			return
		}
	}
	writeError(w, http.StatusNotFound, apierror.TypeInvalidRequest, "model_not_found", "model",
		fmt.Sprintf("airlock test upstream: the model %q does not exist", id))
}

type embeddingRequest struct {
	Model          string          `json:"model"`
	Input          json.RawMessage `json:"input"`
	Dimensions     *int            `json:"dimensions"`
	EncodingFormat string          `json:"encoding_format"`
}

type embedding struct {
	Object    string `json:"object"`
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"` // []float32, or a base64 string of little-endian float32s
}

func (s *Server) embeddings(w http.ResponseWriter, r *http.Request) {
	var req embeddingRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if !requireModel(w, req.Model) {
		return
	}
	inputs, ok := embeddingInputs(req.Input)
	if !ok || len(inputs) == 0 {
		badRequest(w, "input", "input must be a string, an array of strings, or an array of token arrays")
		return
	}
	dims := DefaultEmbeddingDimensions
	if req.Dimensions != nil {
		dims = *req.Dimensions
		if dims < 1 || dims > maxEmbeddingDimensions {
			badRequest(w, "dimensions", fmt.Sprintf("dimensions must be from 1 to %d", maxEmbeddingDimensions))
			return
		}
	}
	if req.EncodingFormat != "" && req.EncodingFormat != "float" && req.EncodingFormat != "base64" {
		badRequest(w, "encoding_format", `encoding_format must be "float" or "base64"`)
		return
	}
	data := make([]embedding, len(inputs))
	tokens := 0
	for i, in := range inputs {
		tokens += in.tokens
		v := Embed(in.text, dims)
		data[i] = embedding{Object: "embedding", Index: i, Embedding: v}
		if req.EncodingFormat == "base64" {
			b := make([]byte, 4*len(v))
			for j, f := range v {
				binary.LittleEndian.PutUint32(b[4*j:], math.Float32bits(f))
			}
			data[i].Embedding = base64.StdEncoding.EncodeToString(b)
		}
	}
	writeJSON(w, http.StatusOK, embeddingList{
		Object: "list", Data: data, Model: req.Model,
		Usage: embeddingUsage{PromptTokens: tokens, TotalTokens: tokens},
	})
}

type embeddingList struct {
	Object string         `json:"object"`
	Data   []embedding    `json:"data"`
	Model  string         `json:"model"`
	Usage  embeddingUsage `json:"usage"`
}

type embeddingUsage struct {
	PromptTokens int `json:"prompt_tokens"`
	TotalTokens  int `json:"total_tokens"`
}

// embeddingInput is one input to embed, as text, and its token count.
type embeddingInput struct {
	text   string
	tokens int
}

// embeddingInputs decodes "input": a string, strings, a token array or token
// arrays. Token arrays are embedded as their decimal text.
func embeddingInputs(raw json.RawMessage) ([]embeddingInput, bool) {
	if ss, ok := stringOrStrings(raw); ok {
		ins := make([]embeddingInput, len(ss))
		for i, s := range ss {
			ins[i] = embeddingInput{text: s, tokens: countTokens(s)}
		}
		return ins, true
	}
	var toks []int64
	if json.Unmarshal(raw, &toks) == nil {
		return []embeddingInput{{text: fmt.Sprint(toks), tokens: len(toks)}}, true
	}
	var many [][]int64
	if json.Unmarshal(raw, &many) == nil {
		ins := make([]embeddingInput, len(many))
		for i, t := range many {
			ins[i] = embeddingInput{text: fmt.Sprint(t), tokens: len(t)}
		}
		return ins, true
	}
	return nil, false
}

// Embed returns the vector the server answers for text: dims float32s from
// SHA-256 of the text, scaled to unit length. Tests use it to predict
// answers.
func Embed(text string, dims int) []float32 {
	v := make([]float32, dims)
	var sum float64
	var block [sha256.Size]byte
	for i := range v {
		if i%(sha256.Size/4) == 0 {
			h := sha256.New()
			fmt.Fprintf(h, "%d\x00%s", i/(sha256.Size/4), text)
			h.Sum(block[:0])
		}
		u := binary.LittleEndian.Uint32(block[4*(i%(sha256.Size/4)):])
		f := float64(u)/float64(math.MaxUint32)*2 - 1 // [-1, 1]
		v[i] = float32(f)
		sum += f * f
	}
	if sum > 0 {
		norm := math.Sqrt(sum)
		for i := range v {
			v[i] = float32(float64(v[i]) / norm)
		}
	}
	return v
}

// stringOrStrings decodes a JSON string or array of strings.
func stringOrStrings(raw json.RawMessage) ([]string, bool) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []string{s}, true
	}
	var ss []string
	if json.Unmarshal(raw, &ss) == nil {
		return ss, true
	}
	return nil, false
}
