from django.urls import path

from blockmig.notify import views

urlpatterns = [
    path("deliveries/", views.deliveries, name="notification_deliveries"),
    path("deliveries/<int:pk>/retry/", views.delivery_retry, name="notification_delivery_retry"),
    path("webhooks/", views.webhooks, name="notification_webhooks"),
    path("webhooks/<int:pk>/", views.webhook, name="notification_webhook"),
    path("webhooks/<int:pk>/test/", views.webhook_test, name="notification_webhook_test"),
    path("webhooks/<int:pk>/delete/", views.webhook_delete, name="notification_webhook_delete"),
]
