"""The score room: `scorer score`, files and folders into one report, the inputs untouched."""
