"""Session state: every conversation as it stands, materialised from the log by a Faust app.

``state`` is the pure model and reducer (no Kafka); ``app`` is the Faust app that loads, applies
and saves; ``snapshot`` is the JSON contract the gateway hydrates from."""
