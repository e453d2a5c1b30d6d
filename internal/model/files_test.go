package model

import (
	"errors"
	"reflect"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

func TestProjectVolume(t *testing.T) {
	mode := func(m int32) *int32 { return &m }
	data := map[string][]byte{"b": []byte("2"), "a": []byte("1"), "c": nil}
	for _, tc := range []struct {
		name    string
		src     api.ObjectVolumeSource
		want    []ProjectedFile
		wantErr error
	}{
		{"every key", api.ObjectVolumeSource{Name: "o"},
			[]ProjectedFile{{"a", 0o644, []byte("1")}, {"b", 0o644, []byte("2")}, {"c", 0o644, nil}}, nil},
		{"default mode", api.ObjectVolumeSource{Name: "o", DefaultMode: mode(0o400)},
			[]ProjectedFile{{"a", 0o400, []byte("1")}, {"b", 0o400, []byte("2")}, {"c", 0o400, nil}}, nil},
		{"items", api.ObjectVolumeSource{Name: "o", DefaultMode: mode(0o440), Items: []api.KeyToPath{
			{Key: "b", Path: "sub/./two"}, {Key: "a", Path: "one", Mode: mode(0o600)}}},
			[]ProjectedFile{{"one", 0o600, []byte("1")}, {"sub/two", 0o440, []byte("2")}}, nil},
		{"item key gone", api.ObjectVolumeSource{Name: "o", Items: []api.KeyToPath{{Key: "z", Path: "z"}}}, nil, errdefs.ErrFailedPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ProjectVolume(&tc.src, data)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ProjectVolume = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}
