// compose-check loads a docker-compose file with compose-go, the loader Docker Compose v2 itself uses:
// schema validation, interpolation (including ${VAR:?message} required variables) and normalisation.
// It prints the normalised project as JSON, or the loader's error and exit status 1. Several files merge in
// order, as with `docker compose -f a.yml -f b.yml` (the fleet topology is docker-compose.fleet.yml over the base).
//
//	compose-check [--env-file FILE] docker-compose.yml [override.yml...]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	envFile := flag.String("env-file", "", "dotenv file with the variables to interpolate")
	flag.Parse()
	if flag.NArg() < 1 {
		fmt.Fprintln(os.Stderr, "usage: compose-check [--env-file FILE] docker-compose.yml [override.yml...]")
		os.Exit(2)
	}
	opts := []cli.ProjectOptionsFn{cli.WithOsEnv, cli.WithName("qt-telemetry")}
	if *envFile != "" {
		opts = append(opts, cli.WithEnvFiles(*envFile), cli.WithDotEnv)
	}
	options, err := cli.NewProjectOptions(flag.Args(), opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Stdout.Write(out)
}
