"""What every EventFlow service shares: config, event store, projections, errors, logging, crypto."""
