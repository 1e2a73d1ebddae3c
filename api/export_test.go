package api

import "time"

// SetWorkTime sets the time a request's work may take once it has been
// read (requestTimeout in production), before s serves.
func SetWorkTime(s *Server, d time.Duration) { s.workTime = d }
