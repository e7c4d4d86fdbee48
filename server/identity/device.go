package identity

import (
	"context"
	"net/http"
)

type deviceKey struct{}

// NewContext returns a copy of ctx that carries device as the authenticated device name.
func NewContext(ctx context.Context, device string) context.Context {
	return context.WithValue(ctx, deviceKey{}, device)
}

// DeviceFromContext returns the authenticated device name that WithDevice or NewContext put in
// ctx.
func DeviceFromContext(ctx context.Context) (string, bool) {
	device, ok := ctx.Value(deviceKey{}).(string)
	return device, ok && device != ""
}

// DeviceFromRequest returns the common name of the request's verified client certificate. A
// request over plain HTTP, without a client certificate, or whose certificate the TLS
// handshake did not verify has no device.
func DeviceFromRequest(r *http.Request) (string, bool) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return "", false
	}
	name := r.TLS.VerifiedChains[0][0].Subject.CommonName
	return name, name != ""
}

// WithDevice puts the device name from the request's verified client certificate, if any,
// into the request context for DeviceFromContext.
func WithDevice(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if device, ok := DeviceFromRequest(r); ok {
			r = r.WithContext(NewContext(r.Context(), device))
		}
		next.ServeHTTP(w, r)
	})
}

// RequireDevice is WithDevice that responds with 401 Unauthorized to a request without a verified
// client certificate.
func RequireDevice(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		device, ok := DeviceFromRequest(r)
		if !ok {
			http.Error(w, "a device client certificate is required; enroll the device first",
				http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), device)))
	})
}
