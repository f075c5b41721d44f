"""PLC, SCADA and MQTT device simulators that speak the real protocols (issues 3-6)."""
