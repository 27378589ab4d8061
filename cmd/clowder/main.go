// Command clowder is a pull-through caching registry proxy for container
// images and AI models (OCI registries, ollama, Hugging Face).
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "clowder: "+oneLine(err.Error()))
		os.Exit(1)
	}
}
