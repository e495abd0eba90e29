package kubetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"
)

// Apply creates each object, or replaces it when it exists (the stored
// resourceVersion is taken over, so the caller need not know it). Objects
// without a namespace go to "default" when their kind is namespaced. A
// non-empty .status is also written through the status subresource when the
// resource has one. On return each object holds the server's copy.
func (e *Env) Apply(t testing.TB, objs ...*unstructured.Unstructured) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, obj := range objs {
		got, err := e.apply(ctx, obj)
		if err != nil {
			t.Fatalf("kubetest: apply %s %s: %v", obj.GroupVersionKind(), objectName(obj), err)
		}
		obj.Object = got.Object
	}
}

// ApplyYAMLFile applies every object of a multi-document YAML (or JSON) file.
func (e *Env) ApplyYAMLFile(t testing.TB, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	defer f.Close()
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("kubetest: decode %s (document %d): %v", path, len(objs)+1, err)
		}
		if len(m) == 0 { // empty document, e.g. a trailing "---"
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
	e.Apply(t, objs...)
}

func (e *Env) apply(ctx context.Context, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	ri, err := e.resourceFor(obj)
	if err != nil {
		return nil, err
	}
	desired := obj.DeepCopy()
	status, hasStatus := desired.Object["status"].(map[string]any)
	hasStatus = hasStatus && len(status) > 0

	got, err := ri.Create(ctx, desired, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur, err := ri.Get(ctx, desired.GetName(), metav1.GetOptions{})
			if err != nil {
				return err
			}
			desired.SetResourceVersion(cur.GetResourceVersion())
			got, err = ri.Update(ctx, desired, metav1.UpdateOptions{})
			return err
		})
	}
	if err != nil {
		return nil, err
	}
	if !hasStatus {
		return got, nil
	}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		withStatus := got.DeepCopy()
		withStatus.Object["status"] = status
		updated, err := ri.UpdateStatus(ctx, withStatus, metav1.UpdateOptions{})
		if err == nil {
			got = updated
			return nil
		}
		if apierrors.IsConflict(err) {
			if cur, gerr := ri.Get(ctx, got.GetName(), metav1.GetOptions{}); gerr == nil {
				got = cur
			}
		}
		return err
	})
	if apierrors.IsNotFound(err) || apierrors.IsMethodNotSupported(err) {
		// No status subresource: the status went in with the object.
		return got, nil
	}
	if err != nil {
		return nil, fmt.Errorf("update status: %w", err)
	}
	return got, nil
}

// resourceFor maps the object's kind to its resource, refreshing discovery
// once when the kind is unknown (e.g. a CRD created since the last lookup).
func (e *Env) resourceFor(obj *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := obj.GroupVersionKind()
	if gvk.Kind == "" || gvk.Version == "" {
		return nil, fmt.Errorf("object %s has no apiVersion/kind", objectName(obj))
	}
	mapping, err := e.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		e.mapper.Reset()
		mapping, err = e.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return nil, err
	}
	return e.resourceInterface(mapping.Resource, mapping.Scope.Name() == meta.RESTScopeNameNamespace, obj), nil
}

func (e *Env) resourceInterface(gvr schema.GroupVersionResource, namespaced bool, obj *unstructured.Unstructured) dynamic.ResourceInterface {
	if !namespaced {
		return e.Dynamic.Resource(gvr)
	}
	if obj.GetNamespace() == "" {
		obj.SetNamespace(metav1.NamespaceDefault)
	}
	return e.Dynamic.Resource(gvr).Namespace(obj.GetNamespace())
}

func objectName(obj *unstructured.Unstructured) string {
	if ns := obj.GetNamespace(); ns != "" {
		return ns + "/" + obj.GetName()
	}
	return obj.GetName()
}
