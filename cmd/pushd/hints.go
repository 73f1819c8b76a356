package main

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/pushd/pushd/internal/daemon"
	"github.com/pushd/pushd/internal/pushapi"
)

// runHint is the next step to take after `pushd run` failed with err, or
// "" when the error says enough. path is the config file.
func runHint(err error, path string) string {
	var ae *pushapi.APIError
	var ce *daemon.CredentialError
	switch {
	case errors.As(err, &ce):
		return fmt.Sprintf("the credential cannot sign in: run `pushd doctor -c %s` for the fix", path)
	case errors.Is(err, pushapi.ErrNotFound):
		return fmt.Sprintf("the dataset is not there: run `pushd provision -c %s` to create it (with provision.create: true), or point target.dataset_name at an existing push dataset; `pushd doctor -c %s` lists what the workspace holds", path, path)
	case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
		return fmt.Sprintf("Power BI does not know the dataset or table: check target.dataset_id and target.table, or run `pushd provision -c %s` to create them; `pushd doctor -c %s` lists what the workspace holds", path, path)
	}
	return ""
}
