// Command kstatus prints the kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status) of Kubernetes
// objects: what Flux's kustomize-controller and `kubectl wait`-style tools compute to decide
// whether a resource is Current, InProgress, Failed or Terminating.
//
// It reads one JSON document from stdin: an object, a list ({"items": [...]}), or an array of
// objects. It writes one JSON line per object:
//
//	{"kind": "...", "name": "...", "status": "Current", "message": "..."}
//
// Tailor's tests use it to show how Flux waits on TrainingJobs and DriftMonitors in every state.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

// objects decodes stdin the way the API machinery does: whole numbers become int64, which
// unstructured accessors such as metadata.generation require.
func objects(data []byte) ([]map[string]interface{}, error) {
	var array []map[string]interface{}
	if err := utiljson.Unmarshal(data, &array); err == nil {
		return array, nil
	}
	var single map[string]interface{}
	if err := utiljson.Unmarshal(data, &single); err != nil {
		return nil, fmt.Errorf("stdin is neither a JSON object nor an array of objects: %w", err)
	}
	if items, ok := single["items"].([]interface{}); ok {
		for _, item := range items {
			object, ok := item.(map[string]interface{})
			if !ok {
				return nil, fmt.Errorf("an item of the list is not an object")
			}
			array = append(array, object)
		}
		return array, nil
	}
	return []map[string]interface{}{single}, nil
}

func main() {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: reading stdin:", err)
		os.Exit(2)
	}
	items, err := objects(data)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(2)
	}
	out := json.NewEncoder(os.Stdout)
	for _, item := range items {
		object := &unstructured.Unstructured{Object: item}
		computed, err := status.Compute(object)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: %s %s: %v\n", object.GetKind(), object.GetName(), err)
			os.Exit(1)
		}
		if err := out.Encode(result{Kind: object.GetKind(), Name: object.GetName(),
			Status: computed.Status.String(), Message: computed.Message}); err != nil {
			fmt.Fprintln(os.Stderr, "kstatus: writing stdout:", err)
			os.Exit(2)
		}
	}
}
