// Package postgres is the multi-replica Store backend, on PostgreSQL or CockroachDB through
// pgx.
package postgres
