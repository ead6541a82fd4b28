"""Push delivery of Zaqar subscriptions to webhooks: a protocol with no listener, whose
component (``dispatcher.component``) the gateway runs where storage lives."""
