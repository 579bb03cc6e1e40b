from django.urls import path

from hosts import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
]
