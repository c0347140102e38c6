package cache

// SetArchiveCrash makes every archive step fail with err after its file
// was written and fsync'd, before its records leave the store (nil: off).
func SetArchiveCrash(err error) {
	if err == nil {
		archiveCrash = nil
		return
	}
	archiveCrash = func() error { return err }
}
