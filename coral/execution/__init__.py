"""Where jobs go: messages, job bodies, executors, workers and the queue transports."""
