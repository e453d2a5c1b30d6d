package server

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/kanga-run/kanga/api"
)

func TestCreateAutoRemove(t *testing.T) {
	e := newEnv(t, 0)
	body := func(name, policy string) string {
		return fmt.Sprintf(`{"name":%q,"spec":{"autoRemove":true,"restartPolicy":%q,"containers":[{"image":%q}]}}`, name, policy, imgBusybox)
	}
	for _, policy := range []string{"Always", "OnFailure"} {
		wantError(t, e.do(t, "POST", "/v1/instances", e.a.token, body("ar-"+policy, policy)), http.StatusBadRequest, "InvalidArgument",
			"spec.autoRemove cannot be combined with spec.restartPolicy")
	}
	r := e.do(t, "POST", "/v1/instances", e.a.token, body("ar", "Never"))
	wantStatus(t, r, http.StatusCreated)
	var inst api.Instance
	decode(t, r, &inst)
	if !inst.Spec.AutoRemove || !e.stored(t, e.a, "ar").Spec.AutoRemove {
		t.Fatal("spec.autoRemove was not kept")
	}
}
