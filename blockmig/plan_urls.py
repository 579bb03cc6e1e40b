from django.urls import path

from blockmig import plan_views

urlpatterns = [
    path("plans/", plan_views.plan_list, name="plan_list"),
    path("plans/<int:pk>/", plan_views.plan_detail, name="plan_detail"),
    path("plans/<int:pk>/approve/", plan_views.plan_approve, name="plan_approve"),
    path("plans/<int:pk>/discard/", plan_views.plan_discard, name="plan_discard"),
    path("plans/<int:pk>/pause/", plan_views.plan_pause, name="plan_pause"),
    path("plans/<int:pk>/resume/", plan_views.plan_resume, name="plan_resume"),
    path("plans/<int:pk>/abort/", plan_views.plan_abort, name="plan_abort"),
    path("plans/<int:pk>/window/", plan_views.plan_window, name="plan_window"),
    path("hosts/<slug:name>/evacuate/", plan_views.plan_new, name="plan_new"),
]
