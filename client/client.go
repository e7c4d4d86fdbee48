// Package client is a typed Go client for the Fleetplane API. It contains one Connect client per
// service and adds helpers keyed by resource kind (Get, List, Create, Update, Delete, Watch), so
// that tools such as the fleetplane command treat every kind the same way.
package client

import (
	"net/http"
	"strings"

	"connectrpc.com/connect"
	"github.com/fleetplane/fleetplane/gen/fleetplane/v1/fleetplanev1connect"
)

// Client calls one Fleetplane server. It is safe for concurrent use.
type Client struct {
	BaseURL string

	Devices            fleetplanev1connect.DeviceServiceClient
	Fleets             fleetplanev1connect.FleetServiceClient
	TemplateVersions   fleetplanev1connect.TemplateVersionServiceClient
	Repositories       fleetplanev1connect.RepositoryServiceClient
	ResourceSyncs      fleetplanev1connect.ResourceSyncServiceClient
	EnrollmentRequests fleetplanev1connect.EnrollmentRequestServiceClient
	Events             fleetplanev1connect.EventServiceClient
	Tasks              fleetplanev1connect.TaskServiceClient
	Replicas           fleetplanev1connect.ReplicaServiceClient
}

type config struct {
	httpClient connect.HTTPClient
	options    []connect.ClientOption
}

// Option configures New.
type Option func(*config)

// WithHTTPClient sets the HTTP client; the default is http.DefaultClient (HTTP/1.1, or HTTP/2
// over TLS).
func WithHTTPClient(c connect.HTTPClient) Option {
	return func(cfg *config) { cfg.httpClient = c }
}

// WithClientOptions adds Connect client options, such as interceptors or the gRPC protocol.
func WithClientOptions(opts ...connect.ClientOption) Option {
	return func(cfg *config) { cfg.options = append(cfg.options, opts...) }
}

// New returns a Client for the server at baseURL, such as "http://127.0.0.1:7080". It speaks
// the Connect protocol unless an option selects another.
func New(baseURL string, opts ...Option) *Client {
	cfg := config{httpClient: http.DefaultClient}
	for _, opt := range opts {
		opt(&cfg)
	}
	baseURL = strings.TrimRight(baseURL, "/")
	h, o := cfg.httpClient, cfg.options
	return &Client{
		BaseURL:            baseURL,
		Devices:            fleetplanev1connect.NewDeviceServiceClient(h, baseURL, o...),
		Fleets:             fleetplanev1connect.NewFleetServiceClient(h, baseURL, o...),
		TemplateVersions:   fleetplanev1connect.NewTemplateVersionServiceClient(h, baseURL, o...),
		Repositories:       fleetplanev1connect.NewRepositoryServiceClient(h, baseURL, o...),
		ResourceSyncs:      fleetplanev1connect.NewResourceSyncServiceClient(h, baseURL, o...),
		EnrollmentRequests: fleetplanev1connect.NewEnrollmentRequestServiceClient(h, baseURL, o...),
		Events:             fleetplanev1connect.NewEventServiceClient(h, baseURL, o...),
		Tasks:              fleetplanev1connect.NewTaskServiceClient(h, baseURL, o...),
		Replicas:           fleetplanev1connect.NewReplicaServiceClient(h, baseURL, o...),
	}
}
