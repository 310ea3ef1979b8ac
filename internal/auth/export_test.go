package auth

// SetMaxKeys lowers l's key bound so tests can fill the table.
func SetMaxKeys(l *Limiter, n int) { l.maxKeys = n }
