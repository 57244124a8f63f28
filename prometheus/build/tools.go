//go:build tools

// Package tools pins the Prometheus and promtool binaries in this module's build list.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
