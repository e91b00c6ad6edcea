"""The demo plant: an electronics factory in Wuhan, simulated for `lingtan demo`.

`site.yaml` is its site config (as for a real plant), `plant.yaml` how its meters behave,
`demo-factors.yaml` the demo gas supplier's calorific value (demo data). The code here turns
them into meters served over Modbus TCP and MQTT on loopback, a simulated clock, and a month
of history pushed through the same pipeline as the live readings.
"""
