package server

// SetRetryAfterTooManyFills sets the fill cap's Retry-After for a test and
// returns the function that restores it.
func SetRetryAfterTooManyFills(seconds string) (restore func()) {
	old := retryAfterTooManyFills
	retryAfterTooManyFills = seconds
	return func() { retryAfterTooManyFills = old }
}
