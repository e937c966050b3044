"""Graph model (DGD/DGDR/DCD), graph builder and the local runner behind `dynamo serve`."""
