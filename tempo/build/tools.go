//go:build tools

// Package tools pins the Tempo binary in this module's build list.
package tools

import _ "github.com/grafana/tempo/cmd/tempo"
