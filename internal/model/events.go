package model

import "github.com/kanga-run/kanga/api"

// MaxEvents bounds an instance's event list: an instance that restarts
// forever must not grow its record without bound.
const MaxEvents = 50

// AppendEvent adds e and keeps the newest MaxEvents.
func AppendEvent(evs []api.Event, e api.Event) []api.Event {
	evs = append(evs, e)
	if len(evs) > MaxEvents {
		evs = evs[len(evs)-MaxEvents:]
	}
	return evs
}
