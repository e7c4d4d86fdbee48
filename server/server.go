package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/gen/fleetplane/v1/fleetplanev1connect"
	"github.com/fleetplane/fleetplane/server/tasks"
	"github.com/fleetplane/fleetplane/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprometheus "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// MaxRequestBytes is the largest request message the server reads.
const MaxRequestBytes = 4 << 20

// CertificateSigner issues device client certificates.
type CertificateSigner interface {
	// SignCSR signs a PEM certificate signing request for the named device and returns the
	// PEM certificate.
	SignCSR(csrPEM []byte, deviceName string) (certPEM []byte, err error)
}

// Hooks are optional functions that other parts of the server plug in.
type Hooks struct {
	// ValidateTemplate checks the template parameters of a fleet's device template and returns
	// one error per problem, each naming its path inside the template. Nil means
	// tasks.ValidateTemplate.
	ValidateTemplate func(*fleetplanev1.DeviceTemplate) []error
}

// Config configures New.
type Config struct {
	Store store.Store
	// Logger receives request logs at debug level and internal errors; nil discards them.
	Logger *slog.Logger
	// Signer signs device certificates on enrollment approval. Without one, approvals fail
	// with FAILED_PRECONDITION.
	Signer CertificateSigner
	Hooks  Hooks
}

// Server serves the Fleetplane API.
type Server struct {
	store  store.Store
	log    *slog.Logger
	signer CertificateSigner
	hooks  Hooks

	// Watch timing; tests shorten them.
	pollInterval     time.Duration
	bookmarkInterval time.Duration

	registry      *prometheus.Registry
	meterProvider *sdkmetric.MeterProvider

	mu      sync.Mutex
	mux     *http.ServeMux // guarded by mu
	handler http.Handler   // guarded by mu; set by the first Handler call
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("new server: Config.Store is nil")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hooks := cfg.Hooks
	if hooks.ValidateTemplate == nil {
		hooks.ValidateTemplate = tasks.ValidateTemplate
	}
	registry := prometheus.NewRegistry()
	exporter, err := otelprometheus.New(otelprometheus.WithRegisterer(registry))
	if err != nil {
		return nil, fmt.Errorf("new server: metrics exporter: %w", err)
	}
	return &Server{
		store:            cfg.Store,
		log:              log,
		signer:           cfg.Signer,
		hooks:            hooks,
		pollInterval:     time.Second,
		bookmarkInterval: 30 * time.Second,
		registry:         registry,
		meterProvider:    sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter)),
		mux:              http.NewServeMux(),
	}, nil
}

// Mount serves h at path (a http.ServeMux pattern), for handlers that live in other packages
// such as the agent service. It panics if Handler was already called.
func (s *Server) Mount(path string, h http.Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.handler != nil {
		panic("server: Mount called after Handler")
	}
	s.mux.Handle(path, h)
}

// Handler returns the HTTP handler for every service, health checking, reflection and
// /metrics. The first call fixes the set of routes.
func (s *Server) Handler() http.Handler {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.handler != nil {
		return s.handler
	}
	opts, err := s.handlerOptions()
	if err != nil {
		// The interceptor fails only on invalid options, which are fixed in code.
		panic(fmt.Sprintf("server: handler options: %v", err))
	}
	s.mountServices(opts)
	s.mux.Handle("/metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	s.handler = s.mux
	return s.handler
}

// Shutdown flushes the metrics pipeline. It does not stop serving.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.meterProvider.Shutdown(ctx)
}

func (s *Server) handlerOptions() ([]connect.HandlerOption, error) {
	otel, err := newTelemetryInterceptor(s.meterProvider)
	if err != nil {
		return nil, err
	}
	return []connect.HandlerOption{
		connect.WithReadMaxBytes(MaxRequestBytes),
		connect.WithCodec(strictJSONCodec{name: "json"}),
		connect.WithCodec(strictJSONCodec{name: "json; charset=utf-8"}),
		// The first interceptor is the outermost, so telemetry and the request log see the
		// mapped error code.
		connect.WithInterceptors(otel, logInterceptor{log: s.log}, errorInterceptor{s: s}),
		connect.WithRecover(s.recoverPanic),
	}, nil
}

// recoverPanic logs a handler panic; the client gets INTERNAL.
func (s *Server) recoverPanic(ctx context.Context, spec connect.Spec, _ http.Header, p any) error {
	s.log.LogAttrs(ctx, slog.LevelError, "handler panicked",
		slog.String("procedure", spec.Procedure), slog.Any("panic", p))
	return connect.NewError(connect.CodeInternal, errors.New(msgInternal))
}

// serviceNames lists the services served, for health checking and reflection.
var serviceNames = []string{
	fleetplanev1connect.DeviceServiceName,
	fleetplanev1connect.FleetServiceName,
	fleetplanev1connect.TemplateVersionServiceName,
	fleetplanev1connect.RepositoryServiceName,
	fleetplanev1connect.ResourceSyncServiceName,
	fleetplanev1connect.EnrollmentRequestServiceName,
	fleetplanev1connect.EventServiceName,
	fleetplanev1connect.TaskServiceName,
	fleetplanev1connect.ReplicaServiceName,
}

func (s *Server) mountServices(opts []connect.HandlerOption) {
	handle := func(path string, h http.Handler) { s.mux.Handle(path, h) }
	handle(fleetplanev1connect.NewDeviceServiceHandler(
		&deviceService{s: s, r: newDevices(s)}, opts...))
	handle(fleetplanev1connect.NewFleetServiceHandler(&fleetService{r: newFleets(s)}, opts...))
	handle(fleetplanev1connect.NewTemplateVersionServiceHandler(
		&templateVersionService{r: newTemplateVersions(s)}, opts...))
	handle(fleetplanev1connect.NewRepositoryServiceHandler(
		&repositoryService{r: newRepositories(s)}, opts...))
	handle(fleetplanev1connect.NewResourceSyncServiceHandler(
		&resourceSyncService{r: newResourceSyncs(s)}, opts...))
	handle(fleetplanev1connect.NewEnrollmentRequestServiceHandler(
		&enrollmentService{s: s, r: newEnrollmentRequests(s)}, opts...))
	handle(fleetplanev1connect.NewEventServiceHandler(&eventService{r: newEvents(s)}, opts...))
	handle(fleetplanev1connect.NewTaskServiceHandler(&taskService{s: s}, opts...))
	handle(fleetplanev1connect.NewReplicaServiceHandler(&replicaService{s: s}, opts...))

	checker := grpchealth.NewStaticChecker(serviceNames...)
	handle(grpchealth.NewHandler(checker, opts...))
	reflector := grpcreflect.NewStaticReflector(serviceNames...)
	handle(grpcreflect.NewHandlerV1(reflector, opts...))
	handle(grpcreflect.NewHandlerV1Alpha(reflector, opts...))
}

// strictJSONCodec is Connect's JSON codec except that it rejects unknown fields, so that a
// misspelled field is an INVALID_ARGUMENT instead of being silently dropped.
type strictJSONCodec struct{ name string }

func (c strictJSONCodec) Name() string { return c.name }

func (c strictJSONCodec) Marshal(message any) ([]byte, error) {
	m, ok := message.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("marshal %T: not a protobuf message", message)
	}
	return protojson.Marshal(m)
}

func (c strictJSONCodec) Unmarshal(data []byte, message any) error {
	m, ok := message.(proto.Message)
	if !ok {
		return fmt.Errorf("unmarshal into %T: not a protobuf message", message)
	}
	if len(data) == 0 {
		return errors.New("empty request body; send a JSON object such as {}")
	}
	return protojson.Unmarshal(data, m)
}
