package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/clowder-dev/clowder/cas"
	"github.com/clowder-dev/clowder/proxy"
	"github.com/clowder-dev/clowder/upstream"
)

// OCI distribution error codes.
const (
	CodeBlobUnknown       = "BLOB_UNKNOWN"
	CodeManifestUnknown   = "MANIFEST_UNKNOWN"
	CodeManifestInvalid   = "MANIFEST_INVALID"
	CodeNameUnknown       = "NAME_UNKNOWN"
	CodeNameInvalid       = "NAME_INVALID"
	CodeDigestInvalid     = "DIGEST_INVALID"
	CodeSizeInvalid       = "SIZE_INVALID"
	CodeUnauthorized      = "UNAUTHORIZED"
	CodeDenied            = "DENIED"
	CodeUnsupported       = "UNSUPPORTED"
	CodeTooManyRequests   = "TOOMANYREQUESTS"
	CodeRangeInvalid      = "RANGE_INVALID"
	CodePaginationInvalid = "PAGINATION_NUMBER_INVALID"
	CodeUnavailable       = "UNAVAILABLE"
	CodeUnknown           = "UNKNOWN"
)

// Error is an error with an OCI code and HTTP status.
type Error struct {
	Status  int
	Code    string
	Message string
	Detail  any
	Header  http.Header
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func errorf(status int, code, msg string) *Error {
	return &Error{Status: status, Code: code, Message: msg}
}

// classify maps any error to status, code and message. It is the one place
// that knows how errors become OCI error responses.
func classify(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if errors.Is(err, errBodyIdle) {
		// A trickled push: the upload keeps what came before this request.
		return errorf(http.StatusRequestTimeout, CodeBlobUploadInvalid, err.Error())
	}
	if e := classifyHosted(err); e != nil {
		return e
	}
	var ue *upstream.Error
	isUp := errors.As(err, &ue)
	switch {
	case errors.Is(err, cas.ErrUnsupported):
		return errorf(http.StatusBadRequest, CodeUnsupported, err.Error())
	case errors.Is(err, cas.ErrInvalidDigest):
		return errorf(http.StatusBadRequest, CodeDigestInvalid, err.Error())
	case errors.Is(err, proxy.ErrInvalidTag):
		return errorf(http.StatusBadRequest, CodeManifestInvalid, err.Error())
	case errors.Is(err, proxy.ErrInvalidName), errors.Is(err, cas.ErrInvalidName):
		return errorf(http.StatusBadRequest, CodeNameInvalid, err.Error())
	case errors.Is(err, upstream.ErrUnknownNamespace), errors.Is(err, upstream.ErrNoUpstream):
		return errorf(http.StatusNotFound, CodeNameUnknown, err.Error())
	case errors.Is(err, proxy.ErrManifestUnknown):
		return errorf(http.StatusNotFound, CodeManifestUnknown, err.Error())
	case errors.Is(err, proxy.ErrBlobUnknown):
		return errorf(http.StatusNotFound, CodeBlobUnknown, err.Error())
	case errors.Is(err, upstream.ErrDigestMismatch), errors.Is(err, cas.ErrDigestMismatch), errors.Is(err, cas.ErrSizeMismatch):
		return errorf(http.StatusBadGateway, CodeUnavailable, err.Error())
	case errors.Is(err, upstream.ErrTooLarge), errors.Is(err, upstream.ErrTooDeep):
		return errorf(http.StatusBadGateway, CodeManifestInvalid, err.Error())
	case errors.Is(err, upstream.ErrBlockedAddress):
		// An upstream redirect or token realm pointed at a private address.
		return errorf(http.StatusBadGateway, CodeUnavailable, "upstream request refused (SSRF guard): "+err.Error())
	case errors.Is(err, proxy.ErrTooManyFills):
		e := errorf(http.StatusTooManyRequests, CodeTooManyRequests, err.Error()+"; retry when some finish")
		e.Header = http.Header{"Retry-After": {retryAfterTooManyFills}}
		return e
	case isUp:
		return upstreamError(ue)
	case errors.Is(err, cas.ErrFillStalled):
		return errorf(http.StatusGatewayTimeout, CodeUnavailable, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return errorf(http.StatusGatewayTimeout, CodeUnavailable, "upstream did not answer in time")
	case errors.Is(err, cas.ErrNotFound):
		return errorf(http.StatusNotFound, CodeBlobUnknown, err.Error())
	}
	return errorf(http.StatusInternalServerError, CodeUnknown, err.Error())
}

// upstreamError relays an upstream's verdict: 429 keeps Retry-After, auth
// failures stay auth failures, a dead or broken upstream is 502/503 -- never
// a 404 (which would claim the object does not exist) or a 500.
func upstreamError(ue *upstream.Error) *Error {
	switch {
	case ue.Status == http.StatusTooManyRequests:
		e := errorf(http.StatusTooManyRequests, CodeTooManyRequests, "upstream rate limit: "+ue.Error())
		if ue.RetryAfter != "" {
			e.Header = http.Header{"Retry-After": {ue.RetryAfter}}
		}
		return e
	case ue.Status == http.StatusUnauthorized:
		// Registries such as Docker Hub answer 401 for repositories that do
		// not exist as well as for private ones. A 401 from the proxy would
		// make the client log in to the proxy, which cannot help.
		return errorf(http.StatusNotFound, CodeNameUnknown, "repository not found upstream, or the proxy's upstream credentials do not allow access: "+ue.Error())
	case ue.Status == http.StatusForbidden:
		return errorf(http.StatusForbidden, CodeDenied, "upstream denied access: "+ue.Error())
	case ue.Status == http.StatusNotFound:
		return errorf(http.StatusNotFound, CodeNameUnknown, ue.Error())
	case ue.Status == 0:
		return errorf(http.StatusBadGateway, CodeUnavailable, "upstream unreachable: "+ue.Error())
	case ue.Status == http.StatusServiceUnavailable:
		e := errorf(http.StatusServiceUnavailable, CodeUnavailable, "upstream unavailable: "+ue.Error())
		if ue.RetryAfter != "" {
			e.Header = http.Header{"Retry-After": {ue.RetryAfter}}
		}
		return e
	default:
		return errorf(http.StatusBadGateway, CodeUnavailable, "upstream error: "+ue.Error())
	}
}

// writeError writes err as an OCI error body. HEAD answers carry no body.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := classify(err)
	setErr(r, e)
	for k, v := range e.Header {
		w.Header()[k] = v
	}
	if e.Status == http.StatusUnauthorized && w.Header().Get("WWW-Authenticate") == "" {
		w.Header().Set("WWW-Authenticate", `Basic realm="clowder"`)
	}
	body, _ := json.Marshal(map[string]any{"errors": []map[string]any{{"code": e.Code, "message": e.Message, "detail": e.Detail}}})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Del("Docker-Content-Digest")
	w.WriteHeader(e.Status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
