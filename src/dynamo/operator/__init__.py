"""The Kubernetes operator: CRD generation, pure manifest builders, kopf handlers that reconcile
DynamoGraphDeployments, and the pre-deployment check (`python -m dynamo.operator[.check]`)."""
